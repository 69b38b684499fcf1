"""Sentences in en, fr, it and nl from Debian text packages, for an offline spoken corpus.

Reads the King James Bible (en), translated manual pages, the Debian installation guide, the
aptitude manual and the Debian FAQ (fr, it, nl) and Italian fortune cookies, as installed
from Debian packages (see sprune.data.multilingual_text for the sources and the cleaning),
and writes per language

  OUT/<lang>/{train,dev,test}.txt   distinct normalised sentences (lower case, no
                                    punctuation, the language's letters and apostrophes),
                                    4-15 words by default, disjoint across the splits,
                                    in a seeded random order
  OUT/<lang>/{train,dev,test}.ids   <lang>-<n>, unique over the splits
  OUT/<lang>/stats.json             counts per split and per source, the options (last)

A language already made with the same options is skipped (--force redoes it). A package
that is not installed is an error naming it; tools/install.sh installs them all as root
(`sprune mltext --packages` prints the list for apt-get).

examples:
  sprune mltext --out data/text
  sprune mltext --langs fr,nl --out data/text --dev 300 --test 300 --max-sentences 3000
  apt-get install $(sprune mltext --packages)
  sprune speak --split test --lang nl --text data/text/nl/test.txt --ids data/text/nl/test.ids \\
      --out data/nl_test --max-lines 300
"""
from __future__ import annotations

import argparse
from pathlib import Path

HELP = "sentences in en, fr, it, nl from Debian text packages"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder: DIR/<lang>/{train,dev,test}.txt (required unless "
                        "--packages)")
    parser.add_argument("--langs", default="all", metavar="LIST",
                        help="comma-separated: en, fr, it, nl, or all (default: %(default)s)")
    parser.add_argument("--dev", type=float, default=0.1, metavar="F_OR_N",
                        help="dev share per language: a fraction below 1, or a number of "
                        "sentences (default: %(default)s)")
    parser.add_argument("--test", type=float, default=0.1, metavar="F_OR_N",
                        help="test share, like --dev (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="the shuffle deciding the order and the splits (default: "
                        "%(default)s)")
    parser.add_argument("--min-words", type=int, default=4, metavar="N",
                        help="shortest sentence kept, in words (default: %(default)s)")
    parser.add_argument("--max-words", type=int, default=15, metavar="N",
                        help="longest sentence kept, in words (default: %(default)s)")
    parser.add_argument("--max-sentences", type=int, default=None, metavar="N",
                        help="use at most N sentences per language (taken after the "
                        "shuffle, before the split; default: all)")
    parser.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                        help="file system root holding the installed packages (default: /)")
    parser.add_argument("--bible", default="bible", metavar="CMD",
                        help="Debian's KJV reader for English (default: %(default)s)")
    parser.add_argument("--force", action="store_true",
                        help="redo languages whose stats.json has the same options")
    parser.add_argument("--packages", action="store_true",
                        help="only print the Debian packages the --langs need, one line")


def run(args: argparse.Namespace) -> int:
    from sprune.data.multilingual_text import (build_multilingual_text, debian_packages,
                                               parse_languages)
    from sprune.errors import UserError

    langs = parse_languages(args.langs)
    if args.packages:
        print(" ".join(debian_packages(langs)))
        return 0
    if args.out is None:
        raise UserError("--out DIR is required (where <lang>/{train,dev,test}.txt go)")
    build_multilingual_text(args.out, langs, dev=args.dev, test=args.test, seed=args.seed,
                            min_words=args.min_words, max_words=args.max_words,
                            max_sentences=args.max_sentences, root=args.root,
                            bible_command=args.bible, force=args.force)
    return 0
