"""The reference decoder: ESPnet's own `BeamSearchTransducer`, unchanged, on a sprune
transducer, with a sprune LM as its `lm` (through the LM's ESPnet scorer interface).

ESPnet's `default` search (Graves 2012's beam search: several symbols per frame, one
hypothesis expanded at a time, final ranking by score / length) is the only ESPnet transducer
search that fuses a Transformer LM; beam 1 is its greedy search. It decodes one utterance at
a time: `decode_batch` loops over the batch.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor

from sprune.decode.transducer_search import SearchResult


class EspnetTransducerSearch:
    """search(enc [B, T, D], lengths [B]) -> one `SearchResult` per utterance, by ESPnet."""

    def __init__(self, decoder, joint, beam: int = 4, lm=None, lm_weight: float = 0.0) -> None:
        from sprune.tasks.transducer import import_espnet

        BeamSearchTransducer = import_espnet(
            "espnet2.asr.transducer.beam_search_transducer").BeamSearchTransducer

        if beam < 1:
            raise ValueError(f"beam {beam} < 1")
        use_lm = lm is not None and lm_weight != 0
        if use_lm:
            lm.eval()
        # ESPnet warns that greedy search ignores an LM; the caller knows
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        try:
            self.search = BeamSearchTransducer(decoder, joint, beam, lm=lm if use_lm else None,
                                               lm_weight=lm_weight, search_type="default")
        finally:
            logging.getLogger().setLevel(level)

    @torch.no_grad()
    def __call__(self, enc: Tensor, lengths: Tensor) -> list[SearchResult]:
        results = []
        for b in range(enc.shape[0]):
            best = self.search(enc[b, :int(lengths[b])])[0]
            results.append(SearchResult([int(t) for t in best.yseq[1:]], float(best.score)))
        return results
