"""Spell every word of a text in a CTC run's units: the lexicon of `sprune decode --lexicon`.

One line per word, `word unit unit ...` (flashlight's lexicon format; torchaudio's CTC
decoder reads it), the units from the run's tokenizer (letters, phones or BPE pieces), the
word boundary `|` left out (the decoder puts it between words). Words are normalised as the
run's transcripts are; a word with a symbol the run's units cannot spell is left out and
counted.

example:
  sprune lexicon exp/asr/dense --data data/train --out data/lm/lexicon.txt
  sprune lexicon exp/asr/dense --text corpus.txt --min-count 2 --out lm/lexicon.txt
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sprune.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a CTC run folder (experiment.json, tokenizer)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="DIR",
                        help="a Kaldi data dir: the words of its `text` transcripts")
    source.add_argument("--text", type=Path, metavar="FILE",
                        help="plain text, one sentence per line")
    parser.add_argument("--min-count", type=int, default=1,
                        help="only words seen at least this often (default 1)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="the lexicon file to write")


def run(args: argparse.Namespace) -> int:
    from sprune.decode.arpa import read_sentences
    from sprune.decode.lexicon import build_lexicon, write_lexicon
    from sprune.experiment import ctc_run_tokenizer

    tokenizer = ctc_run_tokenizer(args.run_dir, "a lexicon spells words in a CTC run's units")
    path = args.data / "text" if args.data is not None else args.text
    if args.data is not None and not path.is_file():
        raise UserError(f"{path} is missing; give a data dir with transcripts")
    sentences = read_sentences(path, kaldi=args.data is not None, normalize=tokenizer.normalize)
    lexicon, skipped = build_lexicon(sentences, tokenizer, args.min_count)
    if not lexicon:
        raise UserError(f"no word of {path} can be spelled in the units of {args.run_dir}; "
                        "give transcripts in the run's language")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_lexicon(lexicon, args.out)
    print(f"wrote {args.out}: {len(lexicon):,} words in {tokenizer.kind} units"
          + (f"; left out {len(skipped)} with symbols outside them (e.g. '{skipped[0]}')"
             if skipped else ""))
    return 0
