"""Train a word n-gram on transcripts and write it as an ARPA file, for CTC decoding with
`sprune decode --kenlm` (torchaudio's flashlight decoder reads it through KenLM).

With `--units RUN` the n-gram's "words" are the CTC run's units instead (letters and `|`,
phones or BPE pieces, as the run's tokenizer spells each transcript): the LM of a
lexicon-free search (`sprune decode RUN --kenlm FILE` without `--lexicon`), which needs no
vocabulary and so scores words never seen in training too. The units are spelt from the
orthographic transcripts, as char and BPE runs read them (a phone run's `text.phones` is not
read here yet). A character n-gram of order
5-8 is the usual choice there (e.g. wav2letter's lexicon-free recipes use 10-20-gram
character LMs on large text; the toy corpora here have far less).

Interpolated Kneser-Ney with one discount per order, counted as KenLM's lmplz counts
(sprune.decode.arpa, pure Python: no compiled LM toolkit needed). The text is normalised as
char / BPE transcripts are (lowercase, punctuation dropped: sprune.data.tokenizer.
normalize_text), so its words are the words a CTC run's lexicon spells.

example:
  sprune lm arpa --data data/train --order 3 --out data/lm/3gram.arpa
  sprune lm arpa --text corpus.txt --order 4 --out lm/4gram.arpa
  sprune lm arpa --data data/train --units exp/dense --order 6 --out data/lm/char6.arpa
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
                        help="plain text, one sentence per line")
    parser.add_argument("--order", type=int, default=3, help="n-gram order (default 3, >= 2)")
    parser.add_argument("--units", type=Path, default=None, metavar="RUN",
                        help="count the units of this CTC run folder's tokenizer instead of "
                        "words (for lexicon-free decoding)")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="the ARPA file to write")


def run(args: argparse.Namespace) -> int:
    from sprune.decode.arpa import read_sentences, train_kneser_ney

    tokenizer = None
    if args.units is not None:
        from sprune.experiment import ctc_run_tokenizer

        tokenizer = ctc_run_tokenizer(args.units, "--units takes a CTC run (its units are the "
                                      "n-gram's words)")
    if args.data is not None:
        path = args.data / "text"
        if not path.is_file():
            raise UserError(f"{path} is missing; the n-gram is trained on transcripts")
    else:
        path = args.text
    sentences = read_sentences(path, kaldi=args.data is not None)
    if tokenizer is not None:
        sentences = [tokenizer.tokens(" ".join(words)) for words in sentences]
    model = train_kneser_ney(sentences, args.order, where=str(path))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.write_arpa(args.out)
    unit = f"{tokenizer.kind} units of {args.units}" if tokenizer is not None else "words"
    sizes = ", ".join(f"{len(c):,} {n}-grams" for n, c in enumerate(model.counts, 1))
    print(f"wrote {args.out}: {unit}, order {model.order} ({sizes}), discounts "
          f"{', '.join(f'{d:.3f}' for d in model.discounts)}, from {sum(map(bool, sentences)):,} "
          f"sentences of {path}")
    return 0

