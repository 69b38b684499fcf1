"""CTC decoding of the CTC task: greedy (best path) and beam search.

Inputs are log-probabilities over the vocabulary per frame, [T, V] for one utterance or
[B, T, V] with valid frame counts [B] for a batch; label 0 is the blank.

Greedy decoding (the default of training-time evaluation) is here. Beam search, with or
without a lexicon and an LM, is torchaudio's flashlight decoder
(`sprune.decode.ctc_flashlight`); the Python prefix beam search it replaced is kept as a test
and benchmark reference in `sprune.decode.ctc_reference`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import torch
from torch import Tensor

from sprune.errors import UserError

if TYPE_CHECKING:
    from sprune.data.tokenizer import Tokenizer

BLANK_ID = 0
DECODERS = ("greedy", "beam")


def collapse(path: Sequence[int], blank: int = BLANK_ID) -> list[int]:
    """Merge repeated labels, then drop blanks: [1, 1, 0, 1, 2, 2] -> [1, 1, 2]."""
    out, prev = [], None
    for label in path:
        if label != prev and label != blank:
            out.append(int(label))
        prev = label
    return out


def greedy_decode(log_probs: Tensor, blank: int = BLANK_ID) -> list[int]:
    """Best-path decoding of one utterance. log_probs [T, V] -> label ids."""
    return collapse(log_probs.argmax(-1).tolist(), blank)


def greedy_decode_batch(log_probs: Tensor, lengths: Tensor | None = None,
                        blank: int = BLANK_ID) -> list[list[int]]:
    """Greedy decoding of a batch. log_probs [B, T, V], lengths [B] valid frames."""
    best = log_probs.argmax(-1).cpu()
    counts = lengths.tolist() if lengths is not None else [best.shape[1]] * best.shape[0]
    return [collapse(path[:int(n)].tolist(), blank) for path, n in zip(best, counts)]


def prune_units(log_probs: Tensor, prune: float | None) -> Tensor:
    """Per frame, units with probability below `prune` get -1e30 (never tried by a beam
    search), the frame's most likely unit always stays. log_probs [B, T, V] -> same shape."""
    if not prune:
        return log_probs
    keep = log_probs >= torch.log(torch.tensor(prune))
    keep |= log_probs == log_probs.max(-1, keepdim=True).values
    return log_probs.masked_fill(~keep, -1e30)


def check_decoding_options(decoder: str, kenlm: str | None, lm_weight: float,
                           beam_tokens: int | None = None) -> None:
    """The `ctc:` decoding keys that do not go together, or a missing n-gram file, are a
    one-line `UserError` (checked when an experiment is made, before any training)."""
    if decoder not in DECODERS:
        raise UserError(f"unknown CTC decoder '{decoder}'; use greedy or beam")
    if kenlm is not None and decoder != "beam":
        raise UserError(f"ctc.kenlm ({kenlm}) is fused by the beam search; set "
                        "ctc.decoder: beam or drop ctc.kenlm")
    if kenlm is not None and not Path(kenlm).is_file():
        raise UserError(f"ctc.kenlm: n-gram file {kenlm} does not exist; write it with "
                        "`sprune lm arpa --units RUN`")
    if beam_tokens is not None and beam_tokens < 1:
        raise UserError(f"ctc.beam_tokens must be at least 1 (or null: all units), got "
                        f"{beam_tokens}")
    if lm_weight and kenlm is None:
        raise UserError(f"ctc.lm_weight is {lm_weight} but no ctc.kenlm is given; add the "
                        "unit n-gram or set the weight to 0")


class CTCTaskDecoder:
    """What the CTC task decodes with: `greedy`, or `beam` (flashlight, lexicon-free,
    `beam` hypotheses; `prune`: units below this probability are not tried per frame;
    `beam_tokens`: only this many most likely units are tried per frame (None: all);
    `kenlm`: a unit n-gram fused at `lm_weight`, else no LM).
    __call__(log_probs [B, T, V], lengths [B]) -> hypothesis texts."""

    def __init__(self, tokenizer: "Tokenizer", decoder: Literal["greedy", "beam"] = "greedy",
                 beam: int = 8, prune: float | None = None,
                 beam_threshold: float = 50.0, kenlm: str | None = None,
                 lm_weight: float = 0.0, beam_tokens: int | None = None) -> None:
        check_decoding_options(decoder, kenlm, lm_weight, beam_tokens)
        self.tokenizer, self.decoder, self.prune = tokenizer, decoder, prune
        self.search = None
        if decoder == "beam":
            from sprune.decode.ctc_flashlight import FlashlightCTCDecoder, SearchOptions

            self.search = FlashlightCTCDecoder(tokenizer, SearchOptions(
                beam=beam, beam_tokens=beam_tokens, beam_threshold=beam_threshold,
                lm_weight=lm_weight), kenlm=kenlm)

    def __call__(self, log_probs: Tensor, lengths: Tensor | None = None) -> list[str]:
        if self.search is None:
            return [self.tokenizer.decode(ids) for ids in greedy_decode_batch(log_probs, lengths)]
        return self.search.texts(prune_units(log_probs, self.prune), lengths)
