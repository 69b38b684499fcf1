"""Train the sentencepiece BPE units of an LM on its training text.

Writes the sentencepiece model (--out, e.g. data/lm/bpe.model) and ESPnet's token list
tokens.txt beside it: <blank> (id 0), <unk> (id 1), the BPE pieces, <sos/eos> (the last id).
--vocab-size counts all of them, so it is the LM's vocabulary size. The text is normalised
as ASR transcripts are (sprune.data.tokenizer.normalize_text), so the same units serve a
transducer trained on them. Text longer than --max-sentences lines is sampled (seeded, so
the same text gives the same units) down to that many lines.

example:
  sprune lm bpe --text data/lm/kjv/train.txt --vocab-size 1000 --out data/lm/bpe.model
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from sprune.errors import UserError

TOKEN_LIST = "tokens.txt"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", required=True, type=Path, metavar="FILE",
                        help="LM training text, one sentence per line (sprune lm text's "
                        "train.txt; plain or .gz)")
    parser.add_argument("--vocab-size", required=True, type=int, metavar="N",
                        help="tokens in all, <blank>, <unk> and <sos/eos> included")
    parser.add_argument("--out", required=True, type=Path, metavar="MODEL",
                        help="sentencepiece model to write (tokens.txt goes beside it)")
    parser.add_argument("--max-sentences", type=int, default=2_000_000, metavar="N",
                        help="train on a seeded sample of N lines when the text has more "
                        "(default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar while reading")


def run(args: argparse.Namespace) -> int:
    from sprune.lm.text import read_lines
    from sprune.lm.vocab import LMVocab

    if args.max_sentences < 1:
        raise UserError(f"--max-sentences {args.max_sentences} must be at least 1")
    lines = [line for line in read_lines(args.text, progress=not args.quiet) if line.strip()]
    total = len(lines)
    if total > args.max_sentences:
        keep = sorted(random.Random(0).sample(range(total), args.max_sentences))
        lines = [lines[i] for i in keep]
    vocab = LMVocab.train(lines, args.vocab_size)
    tokens = args.out.parent / TOKEN_LIST
    vocab.write_token_list(tokens)
    vocab.save(args.out)
    sample = f", trained on {len(lines):,} of {total:,} lines" if len(lines) < total else ""
    print(f"wrote {args.out} and {tokens}: {vocab.vocab_size} tokens (<blank> 0, <unk> "
          f"{vocab.unk}, <sos/eos> {vocab.sos_eos}){sample}")
    return 0
