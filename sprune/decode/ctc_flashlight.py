"""CTC beam search with torchaudio's flashlight decoder (`torchaudio.models.decoder.CTCDecoder`
over flashlight-text's C++ `LexiconDecoder` / `LexiconFreeDecoder`).

torchaudio 2.9.1 still ships `torchaudio.models.decoder.ctc_decoder` and its `CTCDecoder`
class; they need the `flashlight-text` package (pinned in tools/requirements.txt, whose
wheel has KenLM built in: it reads ARPA and KenLM binary files). sprune builds the
`CTCDecoder` from its parts instead of calling the `ctc_decoder` factory, so that the
lexicon is checked against the model's units first, the word dictionary is known to a neural
LM before the decoder scores the lexicon with it, and a bad n-gram file is one line.

Search modes:

* lexicon-free, no LM (`lexicon=None`): the blank is the start and silence token, so every
  labelling may start with any unit, as in CTC; the word boundary `|` is an ordinary unit.
  With `log_add` (the default) hypotheses that meet are merged by adding their
  probabilities, which makes the search a prefix beam search like
  `sprune.decode.ctc_reference.prefix_beam_search`: with a wide beam both find the same best
  labelling except where two labellings' probabilities nearly tie (flashlight keeps a
  labelling's blank-ended and unit-ended alignments apart, and the n-best it returns may miss
  some of them; test_ctc_flashlight measures this).
* lexicon-free with a unit n-gram (`kenlm` without `lexicon`): the n-gram's words are the
  model's units (e.g. a character LM, `sprune lm arpa --units RUN`); flashlight scores each
  emitted unit with it (`lm_weight` x log10 P(unit | previous units)), so the search prefers
  spellings the training text makes likely, words outside it included.
* lexicon (`lexicon` from `sprune.decode.lexicon`): only lexicon words are spelled; `|` (when
  the units have it) is silence between words, scored `sil_score`; every word adds
  `word_score`, and `lm_weight` x the LM's word score: a KenLM n-gram (`kenlm`, an ARPA or
  binary file, log10 probabilities as KenLM gives them) or a sprune Transformer LM
  (`sprune.decode.ctc_neural_lm.SpruneWordLM`, also log10).

Hypothesis scores are the acoustic log-likelihood (natural log) + lm_weight x LM + the
insertion scores, as flashlight sums them.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor

from sprune.data.tokenizer import BLANK, WORD_BOUNDARY, Tokenizer
from sprune.decode.lexicon import UNK_WORD, Lexicon
from sprune.errors import UserError
from sprune.tasks.ctc_decode import collapse


@dataclass(frozen=True)
class SearchOptions:
    """Beam search settings.

    beam:            hypotheses kept after each frame
    beam_tokens:     units tried per frame, the most likely first (None: all)
    beam_threshold:  hypotheses scoring more than this below the best are dropped
    lm_weight:       weight of the LM's (log10) word scores
    word_score:      added per word (lexicon search)
    sil_score:       added per silence `|` between words (lexicon search)
    log_add:         merge meeting hypotheses by adding probabilities (else keep the max)
    """

    beam: int = 16
    beam_tokens: int | None = None
    beam_threshold: float = 50.0
    lm_weight: float = 0.0
    word_score: float = 0.0
    sil_score: float = 0.0
    log_add: bool = True


@dataclass(frozen=True)
class CTCResult:
    """One decoded utterance: the unit ids (blanks and repeats collapsed), the words of a
    lexicon search (None without a lexicon) and the search score."""

    ids: list[int]
    words: list[str] | None
    score: float


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence what C++ code writes to file descriptor 2 (KenLM's loading progress bar)."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_kenlm(path: str | os.PathLike, word_dict: Any) -> Any:
    """flashlight's KenLM over `word_dict` (flashlight Dictionary) from an ARPA or KenLM
    binary file; a missing or unreadable file is one line (`UserError`)."""
    from flashlight.lib.text.decoder.kenlm import KenLM

    fix = "give an ARPA or KenLM binary n-gram (`sprune lm arpa` writes one)"
    path = Path(path)
    if not path.is_file():
        raise UserError(f"n-gram file {path} does not exist; {fix}")
    try:
        with _quiet_stderr():
            return KenLM(str(path), word_dict)
    except RuntimeError as err:
        reason = [line for line in str(err).splitlines() if line.strip()]
        detail = reason[-1].strip() if reason else "unreadable"
        raise UserError(f"n-gram file {path} is not a readable ARPA or KenLM binary file "
                        f"(KenLM: {detail}); {fix}") from None


def check_unit_ngram(path: str | os.PathLike, tokenizer: Tokenizer) -> None:
    """A lexicon-free search scores units: an ARPA file whose unigrams are not the model's
    units (a word n-gram, or another model's units) is a one-line `UserError`. KenLM binary
    files are not read here (their vocabulary is not plain text)."""
    path = Path(path)
    if not path.is_file():
        return                    # load_kenlm says it is missing
    special = {"<s>", "</s>", "<unk>"}
    foreign = []
    with open(path, encoding="utf-8", errors="replace") as arpa:
        if arpa.readline().strip() != "\\data\\":
            return                # a binary file
        inside = False
        for line in arpa:
            line = line.strip()
            if line == "\\1-grams:":
                inside = True
            elif inside and line.startswith("\\"):
                break
            elif inside and line:
                fields = line.split("\t")
                if len(fields) >= 2 and fields[1] not in special \
                        and fields[1] not in tokenizer.index:
                    foreign.append(fields[1])
    if foreign:
        raise UserError(f"n-gram file {path} has words that are not units of the model (e.g. "
                        f"'{foreign[0]}', {len(foreign)} in all): without --lexicon, --kenlm is "
                        "a unit n-gram (`sprune lm arpa --units RUN`); give --lexicon FILE to "
                        "decode with a word n-gram")


class FlashlightCTCDecoder:
    """Decode [B, T, V] CTC log-probabilities of a model with `tokenizer`'s units.

    lexicon: word -> spellings (`sprune.decode.lexicon.read_lexicon`), or None (lexicon-free).
    kenlm: path of an ARPA / KenLM binary n-gram: over words with a lexicon, over the units
    without one (`sprune lm arpa --units RUN`); lm: a `SpruneWordLM` (not with kenlm), which
    needs a lexicon, whose words it scores.
    """

    def __init__(self, tokenizer: Tokenizer, options: SearchOptions = SearchOptions(),
                 lexicon: Lexicon | None = None, kenlm: str | os.PathLike | None = None,
                 lm: Any = None) -> None:
        from flashlight.lib.text.decoder import (CriterionType, LexiconDecoderOptions,
                                                 LexiconFreeDecoderOptions, ZeroLM)
        from flashlight.lib.text.dictionary import Dictionary, create_word_dict
        from torchaudio.models.decoder import CTCDecoder

        if options.beam < 1:
            raise UserError(f"--beam must be at least 1, got {options.beam}")
        if options.beam_tokens is not None and options.beam_tokens < 1:
            raise UserError(f"--beam-tokens must be at least 1, got {options.beam_tokens}")
        if kenlm is not None and lm is not None:
            raise UserError("give --kenlm or --lm, not both")
        if lm is not None and lexicon is None:
            raise UserError("the sprune LM scores words: give --lexicon FILE with --lm "
                            "(`sprune lexicon RUN --data DIR --out FILE` writes one)")
        if lexicon is None and options.word_score:
            raise UserError("--word-score applies to lexicon search; give --lexicon FILE")
        self.tokenizer, self.options, self.lexicon = tokenizer, options, lexicon
        tokens = Dictionary(list(tokenizer.vocab))
        common = dict(beam_size=options.beam,
                      beam_size_token=min(options.beam_tokens or tokenizer.vocab_size,
                                          tokenizer.vocab_size),
                      beam_threshold=options.beam_threshold, lm_weight=options.lm_weight,
                      sil_score=options.sil_score, log_add=options.log_add,
                      criterion_type=CriterionType.CTC)
        if lexicon is None:
            self.word_dict = None
            search = LexiconFreeDecoderOptions(**common)
            silence = BLANK           # CTC: a labelling may start with any unit
            # a unit n-gram: its words are the units, scored as each one is emitted
            if kenlm is not None:
                check_unit_ngram(kenlm, tokenizer)
                self.lm = load_kenlm(kenlm, tokens)
            else:
                self.lm = ZeroLM()
        else:
            self.word_dict = create_word_dict({**lexicon, UNK_WORD: []})
            search = LexiconDecoderOptions(**common, word_score=options.word_score,
                                           unk_score=float("-inf"))
            silence = WORD_BOUNDARY if WORD_BOUNDARY in tokenizer.index else BLANK
            if kenlm is not None:
                self.lm = load_kenlm(kenlm, self.word_dict)
            elif lm is not None:
                lm.bind([self.word_dict.get_entry(i) for i in range(self.word_dict.index_size())])
                self.lm = lm
            else:
                self.lm = ZeroLM()
        self.decoder = CTCDecoder(nbest=options.beam, lexicon=lexicon, word_dict=self.word_dict,
                                  tokens_dict=tokens, lm=self.lm, decoder_options=search,
                                  blank_token=BLANK, sil_token=silence, unk_word=UNK_WORD)
        self.silence = tokens.get_index(silence)

    def decode(self, log_probs: Tensor, lengths: Tensor | None = None) -> list[CTCResult]:
        """log_probs [B, T, V] (log-softmax output), lengths [B] valid frames -> the best
        hypothesis per utterance."""
        if log_probs.dim() != 3 or log_probs.shape[-1] != self.tokenizer.vocab_size:
            raise ValueError(f"log_probs must be [batch, frames, {self.tokenizer.vocab_size}], "
                             f"got {tuple(log_probs.shape)}")
        emissions = log_probs.detach().float().cpu().contiguous()
        batch, frames, units = emissions.shape
        counts = lengths.tolist() if lengths is not None else [frames] * batch
        out = []
        for b in range(batch):
            pointer = emissions.data_ptr() + 4 * b * emissions.stride(0)
            results = self.decoder.decoder.decode(pointer, int(counts[b]), units)
            out.append(self._best(results))
        return out

    def _best(self, results: list[Any]) -> CTCResult:
        """The best of flashlight's final hypotheses. Without a lexicon, hypotheses with the
        same labelling (blank- and unit-ended alignments) are merged first (log_add) or the
        best kept; flashlight's token path has one entry per frame between a start and an
        end entry."""
        if not results:
            return CTCResult([], [] if self.lexicon is not None else None, float("-inf"))
        if self.lexicon is not None:
            best = results[0]
            words = [self.word_dict.get_entry(w) for w in best.words if w >= 0]
            ids = [i for i in collapse(best.tokens[1:-1]) if i != self.silence]
            return CTCResult(ids, words, float(best.score))
        merged: dict[tuple[int, ...], float] = {}
        for result in results:
            key = tuple(collapse(result.tokens[1:-1]))
            score = float(result.score)
            if key in merged:
                high, low = max(merged[key], score), min(merged[key], score)
                score = high + float(torch.tensor(low - high).exp().log1p()) \
                    if self.options.log_add else high
            merged[key] = score
        labels = max(merged, key=merged.__getitem__)
        return CTCResult(list(labels), None, merged[labels])

    def texts(self, log_probs: Tensor, lengths: Tensor | None = None) -> list[str]:
        """The hypothesis text per utterance: the lexicon words, or the decoded units."""
        return [" ".join(r.words) if r.words is not None else self.tokenizer.decode(r.ids)
                for r in self.decode(log_probs, lengths)]
