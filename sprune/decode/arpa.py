"""A word n-gram LM of any order, interpolated Kneser-Ney, written as an ARPA file for KenLM.

The CTC decoder (`sprune.decode.ctc_flashlight`) fuses word n-grams through flashlight-text's
KenLM, which reads ARPA (and KenLM's binary format); the `kenlm` Python package only reads
models. This module builds the ARPA file itself, in pure Python, so the recipes need no
compiled LM toolkit (lmplz, irstlm, SRILM).

Smoothing: interpolated Kneser-Ney with one absolute discount per order (Kneser & Ney 1995,
"Improved backing-off for m-gram language modeling"; Chen & Goodman 1998, "An empirical study
of smoothing techniques for language modeling", TR-10-98, sec. 2.7 and 3), with the count
conventions of KenLM's lmplz and SRILM:

* sentences are `<s> w_1 .. w_k </s>`; the counts a_n(g) of an n-gram g are its raw counts
  when n is the highest order or g starts with `<s>` (nothing precedes `<s>`), else its
  continuation count N1+(. g), the number of distinct words seen just before g;
* per order n, D_n = n1 / (n1 + 2 n2) from the counts-of-counts of a_n
  (`sprune.lm.ngram.kn_discount`, which falls back to 0.75 when n1 = 0);
* with A(h) = sum_w a_n(h w) and T(h) = #{w : a_n(h w) > 0}, for a context h seen at order n,

      P_n(w | h) = max(a_n(h w) - D_n, 0) / A(h) + D_n T(h) / A(h) * P_{n-1}(w | h')

  h' being h without its first word; P_n = P_{n-1} for a context never seen at order n;
* P_1(w) = max(a_1(w) - D_1, 0) / A + D_1 T / A * 1 / |V|, the uniform part spread over the
  vocabulary V = the seen words, `</s>` and `<unk>` (not `<s>`, which is never predicted), so
  no word has probability 0.

The ARPA file lists every seen n-gram h w with log10 P_n(w | h) and, when h w is a context
of order n + 1, its backoff weight log10(D_{n+1} T(h w) / A(h w)): for an unseen h w the
recursion above is exactly ARPA's backoff, so KenLM reproduces P_n for every word sequence.
"""
from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.lm.ngram import ARPA_NEVER, kn_discount

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
Gram = tuple[str, ...]


@dataclass
class WordNGram:
    """An interpolated Kneser-Ney word n-gram (see the module docstring).

    counts[n - 1]  the adjusted counts a_n of every seen n-gram of order n
    discounts      D_1 .. D_N
    vocab          the words P_1 spreads over: the seen words, `</s>` and `<unk>`
    """

    order: int
    counts: list[dict[Gram, int]]
    discounts: list[float]
    vocab: list[str]
    _context: list[dict[Gram, tuple[int, int]]] = field(default_factory=list, repr=False)
    _cache: dict[Gram, float] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._words = frozenset(self.vocab)
        # per order n: context h -> (A(h), T(h)) over the n-grams h w of that order
        self._context = []
        for table in self.counts:
            stats: dict[Gram, list[int]] = defaultdict(lambda: [0, 0])
            for gram, count in table.items():
                entry = stats[gram[:-1]]
                entry[0] += count
                entry[1] += 1
            self._context.append({h: (a, t) for h, (a, t) in stats.items()})

    def prob(self, word: str, context: Sequence[str] = ()) -> float:
        """P(word | context): the last `order - 1` words of `context` are used; a word
        outside the vocabulary is `<unk>`."""
        word = word if word in self._words else UNK
        context = tuple(context)[-(self.order - 1):] if self.order > 1 else ()
        return self._prob(context + (word,))

    def _prob(self, gram: Gram) -> float:
        if gram in self._cache:
            return self._cache[gram]
        n = len(gram)
        if n == 1:
            total, types = self._context[0][()]
            d = self.discounts[0]
            value = (max(self.counts[0].get(gram, 0) - d, 0.0) + d * types / len(self.vocab)) \
                / total
        else:
            lower = self._prob(gram[1:])
            seen = self._context[n - 1].get(gram[:-1])
            if seen is None:
                value = lower
            else:
                total, types = seen
                d = self.discounts[n - 1]
                value = (max(self.counts[n - 1].get(gram, 0) - d, 0.0)
                         + d * types * lower) / total
        self._cache[gram] = value
        return value

    def backoff(self, context: Gram) -> float:
        """The interpolation weight D T(h) / A(h) of a context h seen at order len(h) + 1
        (1.0 for any other context)."""
        n = len(context) + 1
        if n > self.order or context not in self._context[n - 1]:
            return 1.0
        total, types = self._context[n - 1][context]
        return self.discounts[n - 1] * types / total

    def sentence_log10(self, words: Sequence[str]) -> float:
        """log10 P(`words` </s> | <s>)."""
        history: list[str] = [BOS]
        total = 0.0
        for word in [*words, EOS]:
            total += math.log10(self.prob(word, history))
            history.append(word)
        return total

    def write_arpa(self, path: str | os.PathLike) -> None:
        """Write the model as an ARPA file (log10 probabilities and backoff weights),
        atomically."""
        lines: list[list[str]] = []
        for n in range(1, self.order + 1):
            grams = sorted(self.counts[n - 1])
            if n == 1:
                # <s> is listed as a context (its backoff weight), never as a prediction
                grams = sorted(set(grams) | {(BOS,), (UNK,), (EOS,)})
            rows = []
            for gram in grams:
                logp = ARPA_NEVER if gram == (BOS,) else math.log10(self._prob(gram))
                row = f"{logp:.7f}\t{' '.join(gram)}"
                if n < self.order and gram in self._context[n]:
                    row += f"\t{math.log10(self.backoff(gram)):.7f}"
                rows.append(row)
            lines.append(rows)
        header = "\\data\\\n" + "".join(f"ngram {n}={len(rows)}\n"
                                        for n, rows in enumerate(lines, 1))
        body = "".join(f"\n\\{n}-grams:\n" + "".join(f"{row}\n" for row in rows)
                       for n, rows in enumerate(lines, 1))
        atomic_write_text(path, header + body + "\n\\end\\\n")


def train_kneser_ney(sentences: Iterable[Sequence[str]], order: int = 3,
                     where: str = "the training text") -> WordNGram:
    """Count word sentences (lists of words; empty ones are skipped) and smooth them with
    interpolated Kneser-Ney at `order` (module docstring)."""
    if order < 2:
        raise UserError(f"n-gram order {order}: KenLM reads bigrams and higher; use an order "
                        "of at least 2")
    sentences = [list(s) for s in sentences if len(s)]
    if not sentences:
        raise UserError(f"{where} has no words to train the n-gram on; give at least one "
                        "non-empty sentence")
    reserved = {BOS, EOS, UNK}
    for s in sentences:
        bad = reserved.intersection(s)
        if bad:
            raise UserError(f"{where} contains the reserved word '{sorted(bad)[0]}'; remove "
                            "it from the text (the n-gram adds <s>, </s> and <unk> itself)")
    raw: list[Counter[Gram]] = [Counter() for _ in range(order)]
    for s in sentences:
        padded = (BOS, *s, EOS)
        for n in range(1, order + 1):
            for i in range(len(padded) - n + 1):
                raw[n - 1][padded[i:i + n]] += 1
    counts: list[dict[Gram, int]] = []
    for n in range(1, order + 1):
        if n == order:
            table = dict(raw[n - 1])
        else:
            left: Counter[Gram] = Counter(gram[1:] for gram in raw[n])
            table = {gram: (c if gram[0] == BOS else left[gram])
                     for gram, c in raw[n - 1].items()}
        counts.append(table)
    # <s> is a context, never a predicted word: keep it out of the unigram distribution
    counts[0].pop((BOS,), None)
    discounts = [kn_discount(torch.tensor(list(table.values()), dtype=torch.float64))
                 for table in counts]
    vocab = sorted({g[0] for g in counts[0]} | {EOS, UNK})
    return WordNGram(order, counts, discounts, vocab)


def read_sentences(path: str | os.PathLike, kaldi: bool = False,
                   normalize=None) -> list[list[str]]:
    """Words per line of a text file (a Kaldi `text` file when `kaldi`: the first field,
    the utterance id, is dropped), each line passed through `normalize` (default
    `sprune.data.tokenizer.normalize_text`, the CTC units' normalisation) first."""
    from sprune.data.tokenizer import normalize_text

    normalize = normalize or normalize_text
    try:
        text = open(path, encoding="utf-8").read()
    except FileNotFoundError:
        raise UserError(f"{path} does not exist; give the training transcripts") from None
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not UTF-8 text (byte {err.start}); convert it") from None
    out = []
    for line in text.splitlines():
        if kaldi:
            parts = line.split(maxsplit=1)
            line = parts[1] if len(parts) == 2 else ""
        out.append(normalize(line).split())
    return out
