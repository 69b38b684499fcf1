"""A token-level n-gram LM (unigram or bigram) over `LMVocab` ids, for LODR decoding.

LODR (low-order density ratio, as in icefall) scores a transducer hypothesis with
`score += lm_w * NNLM(k | y) - lodr_w * NGRAM(k | y)`, the n-gram being a bigram trained on
the ASR training transcripts, standing in for the transducer's internal LM. The tables are
dense (V is at most a few thousand), so a decoding step is a row lookup.

Smoothing is interpolated Kneser-Ney (Chen & Goodman 1998, "An empirical study of smoothing
techniques for language modeling", TR-10-98, sec. 2.7 and 3), one absolute discount per
order, D = n1 / (n1 + 2 n2) from that order's counts-of-counts (0.75 when n1 = 0, where D is
undefined or 0 and would leave nothing for unseen tokens):

    P(w | v) = max(c(v w) - D2, 0) / c(v) + D2 N1+(v .) / c(v) * P1(w)     (P1(w) if c(v) = 0)
    P1(w)    = max(N1+(. w) - D1, 0) / N1+(. .) + D1 T1 / N1+(. .) / (V - 1)

N1+(. w) is the number of distinct tokens seen before w (KN continuation count), T1 the
number of tokens with N1+(. w) > 0; the uniform term spreads over the real tokens, ids
1..V-1, so none has probability 0. An order-1 model uses the raw counts c(w) in place of
N1+(. w) (the highest order of a KN model always does). `<blank>` (id 0) has probability 0:
its log-probability is -inf (a decoder must never score blank with this LM). `<sos/eos>`
(id V-1) starts and ends every sentence; the sentences' own ids must lie in 1..V-2.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from sprune.errors import UserError
from sprune.io import atomic_path, atomic_write_text
from sprune.lm.vocab import UNK, UNK_ID, LMVocab, check_vocab_matches

FORMAT = "sprune-token-ngram"
FALLBACK_DISCOUNT = 0.75
ARPA_NEVER = -99.0  # ARPA's log10 "probability" of <s>, which is never predicted


def kn_discount(counts: torch.Tensor) -> float:
    """D = n1 / (n1 + 2 n2) of a count table (n_r: entries equal to r); 0.75 when n1 = 0."""
    n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
    return n1 / (n1 + 2 * n2) if n1 else FALLBACK_DISCOUNT


def _discounted_with_uniform(counts: torch.Tensor, discount: float) -> torch.Tensor:
    """Counts [V] absolutely discounted and interpolated with the uniform distribution over
    ids 1..V-1 -> probabilities [V] (id 0 gets 0)."""
    uniform = torch.ones_like(counts)
    uniform[0] = 0
    uniform /= uniform.sum()
    kept = (counts - discount).clamp(min=0)
    return (kept + discount * (counts > 0).sum() * uniform) / counts.sum()


class TokenNGram:
    """Interpolated Kneser-Ney unigram / bigram over token ids (see the module docstring).

    `log_probs` (natural log): [V] for order 1; [V, V] for order 2, row = previous token.
    Order 2 also keeps `unigram` [V] (its lower-order log-probs), `log_backoff` [V] (the
    natural log of each context's interpolation weight D2 N1+(v .) / c(v), 0 for unseen
    contexts) and `bigrams` [K, 2] (the seen (previous, next) pairs, the ARPA's 2-grams).
    """

    def __init__(self, log_probs: torch.Tensor, discounts: Sequence[float],
                 stats: dict[str, int], unigram: torch.Tensor | None = None,
                 log_backoff: torch.Tensor | None = None,
                 bigrams: torch.Tensor | None = None) -> None:
        self.log_probs, self.unigram = log_probs, unigram
        self.log_backoff, self.bigrams = log_backoff, bigrams
        self.discounts, self.stats = [float(d) for d in discounts], stats
        self.path: Path | None = None

    @property
    def order(self) -> int:
        return self.log_probs.dim()

    @property
    def vocab_size(self) -> int:
        return self.log_probs.shape[-1]

    @classmethod
    def train(cls, sequences: Iterable[Sequence[int]], vocab_size: int, order: int = 2,
              where: str = "the training data") -> "TokenNGram":
        """Count the token id sequences (no `<sos/eos>`; empty ones are skipped, having no
        token order) and smooth them; `where` names the data in error messages."""
        if order not in (1, 2):
            raise UserError(f"n-gram order {order} is not supported; use order 1 or 2")
        sequences = [list(s) for s in sequences if len(s)]
        if not sequences:
            raise UserError(f"{where} has no tokens to train the n-gram LM on; give at least "
                            "one non-empty transcript")
        ids = torch.tensor([t for s in sequences for t in s])
        eos = vocab_size - 1
        if int(ids.min()) < 1 or int(ids.max()) > eos - 1:
            bad = int(ids[(ids < 1) | (ids > eos - 1)][0])
            raise UserError(f"{where} holds token id {bad}, not a token of a vocabulary of "
                            f"{vocab_size} (ids 1..{eos - 1}); encode it with the LM's BPE model")
        # One stream "eos s1 eos s2 eos": each eos ends a sentence and starts the next.
        stream = torch.tensor([t for s in sequences for t in (eos, *s)] + [eos])
        stats = {"sentences": len(sequences), "tokens": len(stream) - 1}
        if order == 1:
            counts = torch.bincount(stream[1:], minlength=vocab_size).double()
            discount = kn_discount(counts)
            stats["unigram_types"] = int((counts > 0).sum())
            return cls(_discounted_with_uniform(counts, discount).log().float(), [discount],
                       stats)
        pairs = stream[:-1] * vocab_size + stream[1:]
        counts = torch.bincount(pairs, minlength=vocab_size ** 2).view(vocab_size, -1).double()
        seen = counts > 0
        d2 = kn_discount(counts)
        continuation = seen.sum(0).double()
        d1 = kn_discount(continuation)
        unigram = _discounted_with_uniform(continuation, d1)
        context = counts.sum(1, keepdim=True)
        backoff = torch.where(context > 0, d2 * seen.sum(1, keepdim=True) / context.clamp(min=1),
                              1.0)
        probs = (counts - d2).clamp(min=0) / context.clamp(min=1) + backoff * unigram
        stats["bigram_types"] = int(seen.sum())
        return cls(probs.log().float(), [d1, d2], stats, unigram=unigram.log().float(),
                   log_backoff=backoff.squeeze(1).log().float(), bigrams=seen.nonzero())

    def to(self, device: torch.device | str) -> "TokenNGram":
        """Move the tables to `device` (e.g. the decoder's GPU); returns self."""
        for name in ("log_probs", "unigram", "log_backoff", "bigrams"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self

    def next_log_probs(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """Log-probs [N, V] of the next token after each of `last_tokens` [N] (`<sos/eos>`
        for a hypothesis with no token yet; order 1 ignores them), on the tables' device;
        a view of the table: do not modify it in place."""
        if self.order == 1:
            return self.log_probs.expand(len(last_tokens), -1)
        return self.log_probs[last_tokens.to(self.log_probs.device)]

    def sentence_log_prob(self, ids: Sequence[int]) -> float:
        """Natural log-probability of `<sos/eos> ids <sos/eos>` (the final eos included)."""
        eos = self.vocab_size - 1
        tokens = torch.tensor([eos, *ids, eos], device=self.log_probs.device)
        steps = self.log_probs[tokens[1:]] if self.order == 1 else \
            self.log_probs[tokens[:-1], tokens[1:]]
        return float(steps.double().sum())

    def perplexity(self, sequences: Iterable[Sequence[int]]) -> float:
        """exp of the mean negative log-prob per predicted token, final eos included."""
        sequences = list(sequences)
        if not sequences:
            raise UserError("no sentences to compute the n-gram perplexity on")
        total = sum(self.sentence_log_prob(s) for s in sequences)
        return math.exp(-total / sum(len(s) + 1 for s in sequences))

    def check_vocab(self, vocab: LMVocab, where: str | os.PathLike) -> None:
        """A BPE model whose size differs from this LM's `vocab_size` is a `UserError`."""
        check_vocab_matches(vocab, self.vocab_size, where)

    def save(self, path: str | os.PathLike) -> None:
        """Write one safetensors file (tables + metadata: order, vocab_size, discounts,
        counts summary) atomically."""
        tensors = {name: getattr(self, name).contiguous().cpu()
                   for name in ("log_probs", "unigram", "log_backoff", "bigrams")
                   if getattr(self, name) is not None}
        meta = {"format": FORMAT, "order": str(self.order), "vocab_size": str(self.vocab_size),
                "discounts": json.dumps(self.discounts), "stats": json.dumps(self.stats)}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        self.path = Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TokenNGram":
        """Read a file written by `save` (never unpickles)."""
        path = Path(path)
        fix = "train it again with sprune.lm.ngram.train_from_text"
        if not path.is_file():
            raise UserError(f"n-gram LM {path} does not exist; {fix}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            model = cls(discounts=json.loads(meta["discounts"]),
                        stats=json.loads(meta["stats"]), **tensors)
            valid = (meta["format"] == FORMAT and model.order == int(meta["order"])
                     and model.vocab_size == int(meta["vocab_size"]))
        except (SafetensorError, OSError, KeyError, TypeError, ValueError):
            valid = False
        if not valid:
            raise UserError(f"{path} is not a readable sprune n-gram LM (corrupt or another "
                            f"format); {fix}")
        model.path = path
        return model

    def write_arpa(self, path: str | os.PathLike, vocab: LMVocab | None = None) -> None:
        """Write the same distribution in ARPA format (log10, backoff weights), the words
        being `vocab`'s tokens (else the decimal ids), `<sos/eos>` as `<s>` / `</s>`;
        `<blank>` is left out."""
        if vocab is not None:
            self.check_vocab(vocab, self.path or "memory")
        words = vocab.token_list[:-1] if vocab is not None else \
            [str(i) for i in range(self.vocab_size - 1)]
        words[UNK_ID] = UNK
        eos, log10 = self.vocab_size - 1, 1 / math.log(10)
        unigram = (self.log_probs if self.order == 1 else self.unigram).double().cpu() * log10
        backoff = [""] * self.vocab_size if self.order == 1 else \
            [f"\t{b:.7f}" for b in (self.log_backoff.double().cpu() * log10).tolist()]
        lines1 = [f"{unigram[i]:.7f}\t{words[i]}{backoff[i]}" for i in range(1, eos)]
        lines1 += [f"{ARPA_NEVER:.1f}\t<s>{backoff[eos]}", f"{unigram[eos]:.7f}\t</s>"]
        sections = [f"\\data\\\nngram 1={len(lines1)}\n"]
        sections.append("\\1-grams:\n" + "".join(f"{line}\n" for line in lines1))
        if self.order == 2:
            sections[0] += f"ngram 2={len(self.bigrams)}\n"
            logp = self.log_probs.double().cpu() * log10
            lines2 = [f"{logp[v, w]:.7f}\t{words[v] if v != eos else '<s>'} "
                      f"{words[w] if w != eos else '</s>'}\n"
                      for v, w in self.bigrams.tolist()]
            sections.append("\\2-grams:\n" + "".join(lines2))
        atomic_write_text(path, "\n".join(sections) + "\n\\end\\\n")


def train_from_text(lines: Iterable[str], vocab: LMVocab, order: int = 2,
                    where: str = "the training text") -> TokenNGram:
    """Train a `TokenNGram` on text lines encoded with `vocab.encode`."""
    return TokenNGram.train((vocab.encode(line) for line in lines), vocab.vocab_size, order,
                            where)
