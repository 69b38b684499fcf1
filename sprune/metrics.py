"""Error rates (WER, CER, PER) and accuracy.

Error rates are corpus-level: the total edit distance (substitutions + deletions + insertions,
Levenshtein via the `editdistance` package) over the total number of reference units, as
fractions (0.1 = 10 %; above 1 when the hypotheses insert a lot). The units:

    WER   words: the text split on whitespace
    CER   characters of the text with whitespace runs collapsed to one space and the ends
          stripped; spaces count (as in jiwer's `cer`)
    PER   phones, given as sequences (e.g. `PhoneTokenizer.phones(text)`); no word boundaries

Per-utterance counts are kept in `ErrorRate.utterances`. An empty set of pairs, or references
that hold no unit at all, is a `UserError`: there is nothing to score.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Hashable, Sequence

import editdistance

from sprune.errors import UserError


@dataclass(frozen=True)
class UtteranceErrors:
    """Edits and reference length of one (reference, hypothesis) pair."""

    edits: int
    ref_units: int

    @property
    def rate(self) -> float:
        """edits / ref_units; for an empty reference 0 when the hypothesis is empty, else inf."""
        if self.ref_units == 0:
            return 0.0 if self.edits == 0 else math.inf
        return self.edits / self.ref_units


@dataclass(frozen=True)
class ErrorRate:
    """Corpus-level error rate with its per-utterance counts."""

    utterances: list[UtteranceErrors] = field(default_factory=list)

    @property
    def edits(self) -> int:
        return sum(u.edits for u in self.utterances)

    @property
    def ref_units(self) -> int:
        return sum(u.ref_units for u in self.utterances)

    @property
    def rate(self) -> float:
        return self.edits / self.ref_units


def _check_pairs(refs: Sequence, hyps: Sequence, what: str) -> None:
    if len(refs) != len(hyps):
        raise UserError(f"{len(refs)} references but {len(hyps)} hypotheses; every utterance "
                        "needs exactly one of each")
    if not refs:
        raise UserError(f"cannot compute {what}: the decoding set is empty; check the data dir "
                        "being decoded")


def unit_errors(refs: Sequence[Sequence[Hashable]], hyps: Sequence[Sequence[Hashable]],
                what: str = "the error rate") -> ErrorRate:
    """Edit distance between unit sequences, per pair and in total."""
    _check_pairs(refs, hyps, what)
    result = ErrorRate([UtteranceErrors(int(editdistance.eval(list(r), list(h))), len(r))
                        for r, h in zip(refs, hyps)])
    if result.ref_units == 0:
        raise UserError(f"cannot compute {what}: every reference is empty")
    return result


def words(text: str) -> list[str]:
    return text.split()


def characters(text: str) -> list[str]:
    return list(" ".join(text.split()))


def word_errors(refs: Sequence[str], hyps: Sequence[str]) -> ErrorRate:
    _check_pairs(refs, hyps, "WER")
    return unit_errors([words(r) for r in refs], [words(h) for h in hyps], "WER")


def char_errors(refs: Sequence[str], hyps: Sequence[str]) -> ErrorRate:
    _check_pairs(refs, hyps, "CER")
    return unit_errors([characters(r) for r in refs], [characters(h) for h in hyps], "CER")


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus word error rate (fraction)."""
    return word_errors(refs, hyps).rate


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus character error rate (fraction)."""
    return char_errors(refs, hyps).rate


def per(refs: Sequence[Sequence[str]], hyps: Sequence[Sequence[str]]) -> float:
    """Corpus phone error rate (fraction) over phone sequences."""
    return unit_errors(refs, hyps, "PER").rate


def accuracy(refs: Sequence[Hashable], preds: Sequence[Hashable]) -> float:
    """Fraction of predictions equal to their reference."""
    _check_pairs(refs, preds, "accuracy")
    return sum(r == p for r, p in zip(refs, preds)) / len(refs)
