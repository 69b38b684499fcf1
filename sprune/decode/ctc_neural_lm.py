"""A sprune Transformer LM (`sprune.lm`, paper 002) as a word LM of torchaudio's CTC decoder
(`torchaudio.models.decoder.CTCDecoderLM`), for lexicon search in
`sprune.decode.ctc_flashlight`.

flashlight asks for the score of one word after a state (a word history) at a time. The LM
predicts BPE pieces, so a word's score is the sum of its pieces' log-probabilities after the
history (sentencepiece's `▁` on the first piece marks the word start); the end of a sentence
is `<sos/eos>`. Scores are log10 (natural log / ln 10), KenLM's unit, so one `lm_weight`
grid serves n-grams and neural LMs alike.

The first time a history is scored, every lexicon word is scored after it at once: the
history runs through the LM into its key / value cache, then the words' pieces (in chunks of
`chunk` words) advance copies of that cache one cached step per piece; the row of scores is
kept (at most `max_rows` rows; the oldest go first). A decoder's states
are `CTCDecoderLMState` children, one per word history; each maps to its piece ids.
"""
from __future__ import annotations

import math
from array import array
from collections import OrderedDict
from typing import Sequence

import torch
from torchaudio.models.decoder import CTCDecoderLM, CTCDecoderLMState

from sprune.lm.model import TransformerLM
from sprune.lm.vocab import LMVocab

LOG10 = math.log(10.0)


class SpruneWordLM(CTCDecoderLM):
    """Word scores of `model` (with its BPE `vocab`) for the words of a lexicon search.

    `bind(words)` (the decoder does it) sets the word of each word index; `start`, `score`
    and `finish` are torchaudio's `CTCDecoderLM` interface.
    """

    def __init__(self, model: TransformerLM, vocab: LMVocab, chunk: int = 512,
                 max_rows: int = 20000) -> None:
        CTCDecoderLM.__init__(self)
        self.model, self.vocab = model.eval(), vocab
        self.chunk, self.max_rows = chunk, max_rows
        self.pieces: list[tuple[int, ...]] = []
        self.rows: OrderedDict[tuple[int, ...], array] = OrderedDict()
        self.history: dict[CTCDecoderLMState, tuple[int, ...]] = {}
        self.forward_passes = 0

    def bind(self, words: Sequence[str]) -> None:
        """The words of the decoder's word indices (index i -> words[i]); the rows scored
        so far stay while the words are the same (e.g. across a weight grid)."""
        pieces = [tuple(self.vocab.encode(w)) or (self.vocab.unk,) for w in words]
        if pieces != self.pieces:
            self.pieces = pieces
            self.rows.clear()

    def _row(self, history: tuple[int, ...]) -> array:
        """log10 scores of every word after `history`, and of `<sos/eos>` last (W + 1)."""
        row = self.rows.get(history)
        if row is None:
            with torch.no_grad():
                row = self._score_all(history)
            self.rows[history] = row
            if len(self.rows) > self.max_rows:
                self.rows.popitem(last=False)
        return row

    def _score_all(self, history: tuple[int, ...]) -> array:
        """The history runs once through the LM into a key / value cache; the words' pieces
        then advance copies of it one position at a time, all words of a chunk together."""
        model, device = self.model, self.model.output.weight.device
        prefix = torch.tensor([[self.vocab.sos_eos, *history]], device=device)
        after_history, cache = model.step(prefix, model.init_cache(1, device))
        self.forward_passes += 1
        scores = []
        for start in range(0, len(self.pieces), self.chunk):
            words = self.pieces[start:start + self.chunk]
            lengths = torch.tensor([len(p) for p in words], device=device)
            tokens = torch.full((len(words), int(lengths.max())), self.vocab.blank,
                                dtype=torch.long, device=device)
            for i, p in enumerate(words):
                tokens[i, :len(p)] = torch.tensor(p)
            state = cache.select(torch.zeros(len(words), dtype=torch.long, device=device))
            logp = after_history.expand(len(words), -1)
            total = torch.zeros(len(words), device=device)
            for k in range(tokens.shape[1]):
                total += logp.gather(1, tokens[:, k:k + 1])[:, 0] * (k < lengths)
                if k + 1 < tokens.shape[1]:
                    logp, state = model.step(tokens[:, k:k + 1], state)
                    self.forward_passes += 1
            scores.append(total)
        eos = after_history[0, self.vocab.sos_eos].reshape(1)
        return array("d", (torch.cat([*scores, eos]).double().cpu() / LOG10).tolist())

    def start(self, start_with_nothing: bool = False) -> CTCDecoderLMState:
        state = CTCDecoderLMState()
        self.history = {state: ()}
        return state

    def score(self, state: CTCDecoderLMState, usr_token_idx: int
              ) -> tuple[CTCDecoderLMState, float]:
        history = self.history[state]
        child = state.child(usr_token_idx)
        if child not in self.history:
            self.history[child] = history + self.pieces[usr_token_idx]
        return child, self._row(history)[usr_token_idx]

    def finish(self, state: CTCDecoderLMState) -> tuple[CTCDecoderLMState, float]:
        return state, self._row(self.history[state])[-1]
