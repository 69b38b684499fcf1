"""CTC prefix beam search in Python (Hannun et al., 2014, "First-pass large vocabulary
continuous speech recognition using bi-directional recurrent DNNs"): the reference that
sprune's CTC decoding (torchaudio's flashlight decoder, `sprune.decode.ctc_flashlight`) is
tested against (test_ctc_flashlight) and timed against (bench/ctc_decode.py). Not on the user
path.

Inputs are log-probabilities over the vocabulary per frame, [T, V] for one utterance or
[B, T, V] with valid frame counts [B] for a batch; label 0 is the blank.

Prefix beam search keeps, for every candidate labelling (prefix), the probability of all
alignments that end in a blank and of all that end in its last label, so a prefix's score is
a sum over its alignments, not one path. With a beam wide enough to keep every prefix it is
the exact log P(labelling | x); with a narrower beam it is a lower bound.

LM hook: `lm_scorer(prefix, label) -> float` is called once when `prefix` is extended by
`label` and returns an additive log-score (already weighted, e.g. alpha * log P_lm + beta at
word boundaries). Beams are ranked by acoustic log-likelihood + accumulated LM score.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

from torch import Tensor

BLANK_ID = 0
NEG_INF = -math.inf
LMScorer = Callable[[tuple[int, ...], int], float]


@dataclass(frozen=True)
class Hypothesis:
    """A labelling (blank-free, repeats collapsed), its acoustic log-likelihood summed over
    the alignments the beam kept, and its ranking score (log-likelihood + LM score)."""

    labels: list[int]
    log_likelihood: float
    score: float


def _logadd(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a < b:
        a, b = b, a
    return a + math.log1p(math.exp(b - a))


def prefix_beam_search(log_probs: Tensor, beam: int = 8, prune: float | None = None,
                       lm_scorer: LMScorer | None = None, blank: int = BLANK_ID,
                       n_best: int | None = None) -> list[Hypothesis]:
    """Prefix beam search on one utterance. log_probs [T, V] (log-softmax output).

    beam: prefixes kept after each frame. prune: at each frame only labels with probability
    >= prune are tried (the most likely one always is); None tries all. Returns up to
    `n_best` (default `beam`) hypotheses, best first.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    rows = log_probs.detach().double().cpu().tolist()
    threshold = math.log(prune) if prune else NEG_INF
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}  # (p_blank, p_label)
    lm: dict[tuple[int, ...], float] = {(): 0.0}
    for row in rows:
        labels = [c for c, lp in enumerate(row) if lp >= threshold]
        if not labels:
            labels = [max(range(len(row)), key=row.__getitem__)]
        grown: dict[tuple[int, ...], list[float]] = defaultdict(lambda: [NEG_INF, NEG_INF])
        for prefix, (p_blank, p_label) in beams.items():
            p_total = _logadd(p_blank, p_label)
            last = prefix[-1] if prefix else None
            for c in labels:
                lp = row[c]
                if c == blank:
                    entry = grown[prefix]
                    entry[0] = _logadd(entry[0], p_total + lp)
                    continue
                extended = prefix + (c,)
                if extended not in lm:
                    lm[extended] = lm[prefix] + (lm_scorer(prefix, c) if lm_scorer else 0.0)
                entry = grown[extended]
                if c == last:
                    # A repeat is a new label only after a blank; otherwise it extends `prefix`.
                    entry[1] = _logadd(entry[1], p_blank + lp)
                    same = grown[prefix]
                    same[1] = _logadd(same[1], p_label + lp)
                else:
                    entry[1] = _logadd(entry[1], p_total + lp)
        ranked = sorted(grown.items(), key=lambda kv: _logadd(*kv[1]) + lm[kv[0]], reverse=True)
        beams = {prefix: (pb, pl) for prefix, (pb, pl) in ranked[:beam]}
        lm = {prefix: lm[prefix] for prefix in beams}
    hyps = [Hypothesis(list(prefix), _logadd(pb, pl), _logadd(pb, pl) + lm[prefix])
            for prefix, (pb, pl) in beams.items()]
    hyps.sort(key=lambda h: h.score, reverse=True)
    return hyps[:n_best or beam]


def _rows(log_probs: Tensor, lengths: Tensor | None) -> list[Tensor]:
    """[B, T, V] + lengths [B] -> B tensors [T_b, V]."""
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be [batch, frames, vocab], got {tuple(log_probs.shape)}")
    if lengths is None:
        return list(log_probs)
    return [lp[:int(n)] for lp, n in zip(log_probs, lengths.tolist())]


def beam_search_batch(log_probs: Tensor, lengths: Tensor | None = None, beam: int = 8,
                      prune: float | None = None, lm_scorer: LMScorer | None = None,
                      blank: int = BLANK_ID) -> list[list[Hypothesis]]:
    """Prefix beam search per utterance of a batch; each list is best first."""
    return [prefix_beam_search(lp, beam, prune, lm_scorer, blank)
            for lp in _rows(log_probs.detach().cpu(), lengths)]
