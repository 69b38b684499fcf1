"""The LM's token inventory: sentencepiece BPE (`sprune.data.tokenizer.BpeTokenizer`) plus
`<sos/eos>`, in ESPnet's token_list order.

    id 0                 <blank>      padding for the LM; the blank of a transducer / CTC
    id 1                 <unk>        characters the BPE model never saw
    ids 2 .. V-2         the BPE pieces (sentencepiece's own ids)
    id V-1               <sos/eos>    starts and ends every sentence

ESPnet builds its `token_list` the same way (`<blank>`, `<unk>`, ..., `<sos/eos>`) and uses
`sos = eos = vocab_size - 1`, so these ids serve the LM, a transducer trained on the same
units and ESPnet itself. Only the sentencepiece `.model` file is saved: `<sos/eos>` is
implied as the id after its last piece. `vocab_size` counts everything, `<sos/eos>` included.

Unlike `BpeTokenizer.encode` (which refuses a transcript with a character outside the
units, since an ASR target must be spelled exactly), `LMVocab.encode` maps unseen characters
to `<unk>`: LM dev and test text is scored as it is, and the `<unk>` count gives its OOV
rate.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from sprune.data.tokenizer import BLANK_ID, BpeTokenizer
from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.lm.text import normalize_lm_line

UNK = "<unk>"
UNK_ID = 1
SOS_EOS = "<sos/eos>"


class LMVocab:
    """A BPE model with `<sos/eos>` appended as the last id (see the module docstring)."""

    def __init__(self, tokenizer: BpeTokenizer, path: str | os.PathLike | None = None) -> None:
        if tokenizer.sp.unk_id() != UNK_ID:
            raise UserError(f"BPE model {path or ''} has <unk> at id {tokenizer.sp.unk_id()}, "
                            f"not {UNK_ID}; train it with `sprune lm bpe`")
        if SOS_EOS in tokenizer.index:
            raise UserError(f"BPE model {path or ''} already has a {SOS_EOS} piece; train it "
                            "with `sprune lm bpe`, which leaves it implied")
        self.tokenizer = tokenizer
        self.path = Path(path) if path is not None else None

    @classmethod
    def train(cls, lines: Iterable[str], vocab_size: int) -> "LMVocab":
        """Train BPE on normalised `lines` so that the vocabulary, `<blank>`, `<unk>` and
        `<sos/eos>` included, has `vocab_size` ids."""
        sentences = [s for s in (normalize_lm_line(line) for line in lines) if s]
        if not sentences:
            raise UserError("no LM training text for the BPE model; give a text file with "
                            "at least one non-empty line")
        # BPE needs every character of the text plus the word-start mark '▁' as pieces.
        least = len({ch for s in sentences for ch in s if ch != " "}) + 4
        if vocab_size < least:
            raise UserError(f"vocab_size {vocab_size} is too small for this text: its "
                            f"characters, '▁', <blank>, <unk> and <sos/eos> need {least}; "
                            f"raise --vocab-size to at least {least}")
        try:
            tokenizer = BpeTokenizer.train(sentences, vocab_size - 1)
        except UserError as err:
            most = re.search(r"value <= (\d+)", str(err))
            if most is None:
                raise
            raise UserError(f"vocab_size {vocab_size} is too large for this text: BPE finds "
                            f"at most {int(most[1]) + 1} tokens (with <sos/eos>); lower "
                            "--vocab-size") from None
        return cls(tokenizer)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LMVocab":
        """Load a sentencepiece `.model` written by `save` (or `sprune lm bpe`)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"BPE model {path} does not exist; train it with `sprune lm bpe`")
        try:
            tokenizer = BpeTokenizer(path.read_bytes())
        except UserError as err:
            raise UserError(f"BPE model {path}: {err}") from None
        except Exception:
            raise UserError(f"{path} is not a sentencepiece model; train it with "
                            "`sprune lm bpe`") from None
        return cls(tokenizer, path)

    def save(self, path: str | os.PathLike) -> None:
        """Write the sentencepiece model file atomically (`<sos/eos>` stays implied)."""
        self.tokenizer.save(path)
        self.path = Path(path)

    @property
    def vocab_size(self) -> int:
        """Ids in all: the BPE pieces (with `<blank>` and `<unk>`) + `<sos/eos>`."""
        return self.tokenizer.vocab_size + 1

    @property
    def sos_eos(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def unk(self) -> int:
        return UNK_ID

    @property
    def blank(self) -> int:
        return BLANK_ID

    @property
    def token_list(self) -> list[str]:
        """Token strings by id, ESPnet's order: `<blank>`, `<unk>`, pieces, `<sos/eos>`."""
        return [*self.tokenizer.vocab, SOS_EOS]

    def normalize(self, line: str) -> str:
        return normalize_lm_line(line)

    def encode(self, line: str) -> list[int]:
        """Ids of the normalised `line` (no `<sos/eos>`); a character the BPE model never
        saw becomes `<unk>` (count them with `ids.count(vocab.unk)`)."""
        return self.tokenizer.sp.encode(normalize_lm_line(line))

    def encode_batch(self, lines: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """`encode` of many lines at once (sentencepiece's batched C++ encoder)."""
        return self.tokenizer.sp.encode([normalize_lm_line(line) for line in lines],
                                        num_threads=num_threads)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; `<blank>` and `<sos/eos>` are skipped, `<unk>` shows as ' ⁇ '."""
        special = (BLANK_ID, self.sos_eos)
        return self.tokenizer.sp.decode([int(i) for i in ids if int(i) not in special])

    def write_token_list(self, path: str | os.PathLike) -> None:
        """ESPnet's `tokens.txt`: one token per line, line i + 1 holds id i."""
        atomic_write_text(path, "".join(f"{token}\n" for token in self.token_list))

    def __repr__(self) -> str:
        return f"LMVocab(vocab_size={self.vocab_size}, path={str(self.path)!r})"


def check_vocab_matches(vocab: LMVocab, lm_vocab_size: int, where: str | os.PathLike) -> None:
    """A BPE model whose size differs from the LM's output layer is a `UserError` (its ids
    would index other embeddings, or none at all)."""
    if vocab.vocab_size != lm_vocab_size:
        name = vocab.path if vocab.path is not None else "(in memory)"
        raise UserError(f"BPE model {name} has {vocab.vocab_size} tokens but the LM in {where} "
                        f"was trained with {lm_vocab_size}; use the BPE model the LM was "
                        "trained with")

