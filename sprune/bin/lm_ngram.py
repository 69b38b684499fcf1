"""Train a token n-gram (bigram by default) on transcripts, for LODR in `sprune decode`.

LODR (low-order density ratio, as icefall uses it) subtracts a low-order n-gram of the ASR
training transcripts while a neural LM is fused, to take out the internal LM the transducer
learned from them. The n-gram counts the BPE ids of the transducer's bpe.model (the LM's),
interpolated Kneser-Ney (sprune.lm.ngram). Writes one safetensors file (--out) and, with
--arpa, the same model as an ARPA file for KenLM / irstlm users.

example:
  sprune lm ngram --data data/train --bpe exp/asr/dense/bpe.model --out data/lodr.2gram
  sprune lm ngram --text data/kjv/train.txt --bpe data/bpe500/bpe.model --out lm.2gram --arpa lm.arpa
"""
from __future__ import annotations

import argparse
from pathlib import Path

from sprune.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, metavar="DIR",
                        help="a Kaldi data dir: its `text` transcripts (utterance id first)")
    source.add_argument("--text", type=Path, metavar="FILE",
                        help="plain text, one sentence per line (plain or .gz)")
    parser.add_argument("--bpe", required=True, type=Path, metavar="MODEL",
                        help="the BPE model of the transducer and LM (bpe.model)")
    parser.add_argument("--order", type=int, default=2, choices=(1, 2),
                        help="n-gram order (default 2: LODR's bigram)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="the n-gram to write (safetensors)")
    parser.add_argument("--arpa", type=Path, metavar="FILE", help="also write it as ARPA")


def run(args: argparse.Namespace) -> int:
    from sprune.lm.ngram import train_from_text
    from sprune.lm.text import read_lines
    from sprune.lm.vocab import LMVocab

    vocab = LMVocab.load(args.bpe)
    if args.data is not None:
        from sprune.data.datadir import DataDir

        text = DataDir.load(args.data).text
        if text is None:
            raise UserError(f"{args.data}/text is missing; the n-gram is trained on transcripts")
        lines, where = list(text.values()), f"{args.data}/text"
    else:
        lines, where = read_lines(args.text), str(args.text)
    model = train_from_text(lines, vocab, order=args.order, where=where)
    model.save(args.out)
    if args.arpa is not None:
        model.write_arpa(args.arpa, vocab)
    print(f"wrote {args.out}{f' and {args.arpa}' if args.arpa else ''}: order {model.order}, "
          f"{vocab.vocab_size} tokens, trained on {len(lines):,} lines of {where}")
    return 0
