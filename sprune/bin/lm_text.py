"""Prepare LM text: a corpus -> normalised train / dev / test sentences, one per line.

Corpora (--corpus):
  kjv          the King James Bible from Debian's bible-kjv reader (offline; 31,102 verses);
               --source names the reader (default: bible)
  librispeech  the LibriSpeech LM corpus (openslr 11): a local librispeech-lm-norm.txt(.gz),
               a folder holding it, or a URL (default: the openslr URL), downloaded once
               into --download-dir (resumable)
  file         any UTF-8 text file (plain or .gz), one sentence per line: --source PATH

Writes OUT/{train,dev,test}.txt (normalised as ASR transcripts are: lower case, no
punctuation), OUT/{train,dev,test}.ids (where each line came from: the verse, e.g. Ge1:1, or
the source line number) and OUT/stats.json (lines, words and characters per split, the
source and the options). Held-out text is taken in whole chapters (KJV) or blocks of
--block-lines consecutive lines, chosen by --seed; held-out sentences are removed from train
(see sprune.lm.text). A finished OUT made with the same options is skipped (--force redoes).

examples:
  sprune lm text --corpus kjv --out data/lm/kjv
  sprune lm text --corpus librispeech --out data/lm/librispeech --dev 5000 --test 5000
  sprune lm text --corpus file --source my_text.txt.gz --out data/lm/mine --max-lines 100000
"""
from __future__ import annotations

import argparse
from array import array
from pathlib import Path
from typing import Any

from sprune.errors import UserError
from sprune.io import read_json_object

CORPORA = ("kjv", "librispeech", "file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", required=True, choices=CORPORA, help="where the text "
                        "comes from: " + ", ".join(CORPORA))
    parser.add_argument("--source", metavar="PATH_OR_URL",
                        help="kjv: the bible command (default: bible); librispeech: file, "
                        "folder or URL (default: the openslr URL); file: the text file")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder for train/dev/test.txt and stats.json")
    parser.add_argument("--dev", type=float, default=0.02, metavar="F_OR_N",
                        help="dev share: a fraction below 1, or a number of lines "
                        "(default: %(default)s)")
    parser.add_argument("--test", type=float, default=0.02, metavar="F_OR_N",
                        help="test share, like --dev (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="which chapters / blocks are held out (default: %(default)s)")
    parser.add_argument("--max-lines", type=int, default=None, metavar="N",
                        help="use only the first N lines (verses) of the source")
    parser.add_argument("--block-lines", type=int, default=100, metavar="N",
                        help="librispeech / file: consecutive lines held out together "
                        "(default: %(default)s)")
    parser.add_argument("--download-dir", type=Path, default=None, metavar="DIR",
                        help="where a URL is downloaded to (default: OUT/downloads)")
    parser.add_argument("--force", action="store_true",
                        help="redo even if OUT/stats.json was made with the same options")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    from sprune.lm.corpora import LIBRISPEECH_LM_URL

    source = args.source or {"kjv": "bible", "librispeech": LIBRISPEECH_LM_URL}.get(args.corpus)
    if source is None:
        raise UserError("--corpus file needs --source PATH (a UTF-8 text file, one sentence "
                        "per line)")
    if args.max_lines is not None and args.max_lines < 1:
        raise UserError(f"--max-lines {args.max_lines} must be at least 1")
    if args.block_lines < 1:
        raise UserError(f"--block-lines {args.block_lines} must be at least 1")
    options = {"corpus": args.corpus, "source": source, "dev": args.dev, "test": args.test,
               "seed": args.seed, "max_lines": args.max_lines}
    if args.corpus != "kjv":
        options["block_lines"] = args.block_lines
    return options


def _load(options: dict[str, Any], download_dir: Path, progress: bool
          ) -> tuple[list[str], list[str] | None, list[str] | None, str]:
    """(raw lines, their ids (None: the line numbers), their groups (None: blocks), a
    description of the source)."""
    from sprune.lm import corpora
    from sprune.lm.text import read_lines

    corpus, source, max_lines = options["corpus"], options["source"], options["max_lines"]
    if corpus == "kjv":
        verses = corpora.kjv_verses(source)[:max_lines]
        return ([v.text for v in verses], [v.ref for v in verses],
                [v.chapter_ref for v in verses],
                f"King James Bible (Debian bible-kjv: {source} -f {corpora.KJV_RANGE})")
    if corpus == "librispeech":
        lines = corpora.librispeech_lm_lines(source, download_dir, max_lines, progress)
        what = f"LibriSpeech LM corpus ({source})"
    else:
        lines = read_lines(source, max_lines=max_lines, progress=progress)
        what = str(source)
    return lines, None, None, what


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from sprune.lm.text import STATS_FILE, normalize_lm_line, split_indices, write_splits

    options = _options(args)
    out: Path = args.out
    stats_path = out / STATS_FILE
    if stats_path.is_file() and not args.force:
        previous = read_json_object(stats_path, fix="delete it or pass --force").get("options")
        if previous == options:
            print(f"{out}: made before with the same options ({STATS_FILE}); nothing to do "
                  "(--force redoes it)")
            return 0
        print(f"{out}: {STATS_FILE} was made with other options; preparing the text again")
    progress = not args.quiet
    raw, raw_ids, raw_groups, what = _load(options, args.download_dir or out / "downloads",
                                           progress)
    lines, source_index = [], array("q")  # normalised non-empty lines, their source index
    for i, line in enumerate(tqdm(raw, desc="normalising", unit=" lines", disable=not progress,
                                  mininterval=1.0, delay=2.0)):
        text = normalize_lm_line(line)
        if text:
            lines.append(text)
            source_index.append(i)
    empty = len(raw) - len(lines)
    del raw
    if not lines:
        raise UserError(f"{options['source']}: no text is left after normalisation (every "
                        "line is empty or punctuation only)")
    groups = None if raw_groups is None else [raw_groups[i] for i in source_index]
    parts = split_indices(lines, options["dev"], options["test"], options["seed"],
                          groups=groups, block_lines=args.block_lines)
    del groups
    removed = len(lines) - sum(len(p) for p in parts.values())

    def ids(part: list[int]) -> list[str]:
        if raw_ids is None:
            return [str(source_index[i] + 1) for i in part]
        return [raw_ids[source_index[i]] for i in part]

    stats = write_splits(
        out, {name: [lines[i] for i in part] for name, part in parts.items()}, source=what,
        ids={name: ids(part) for name, part in parts.items()},
        extra={"options": options, "dropped": {"empty_after_normalisation": empty,
                                               "duplicates_of_held_out_sentences": removed}})
    summary = ", ".join(f"{name} {stats[name]['lines']:,} lines / {stats[name]['words']:,} "
                        "words" for name in ("train", "dev", "test"))
    print(f"{out}: {summary} ({empty:,} empty lines dropped, {removed:,} repeats of held-out "
          "sentences removed)")
    return 0
