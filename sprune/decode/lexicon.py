"""Pronunciation lexicons for lexicon-constrained CTC decoding (flashlight's format).

A lexicon file has one spelling per line, `word unit unit ...`, whitespace-separated, the
units being those of the CTC model (its tokenizer's vocabulary: letters, phones or BPE
pieces); a word may have several lines (several spellings). The word boundary `|` between
words is not part of a spelling: the decoder treats it as silence between words (a spelling
that ends in `|`, as torchaudio's LibriSpeech lexicon does, works too).

`write_lexicon` spells the words of a text with a run's tokenizer; `read_lexicon` refuses,
in one line naming the file, line and unit, a spelling with a unit the model does not have.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Iterable

from sprune.data.tokenizer import BLANK, WORD_BOUNDARY, Tokenizer
from sprune.errors import UserError
from sprune.io import atomic_write_text

Lexicon = dict[str, list[list[str]]]
UNK_WORD = "<unk>"


def spell(word: str, tokenizer: Tokenizer) -> list[str] | None:
    """The units of one (normalised) word, without word boundaries; None when the word has a
    symbol outside the tokenizer's units (or none at all)."""
    units = [u for u in tokenizer.tokens(word) if u != WORD_BOUNDARY]
    if not units or any(u not in tokenizer.index or u == BLANK for u in units):
        return None
    return units


def build_lexicon(sentences: Iterable[list[str]], tokenizer: Tokenizer,
                  min_count: int = 1) -> tuple[Lexicon, list[str]]:
    """Spell every word seen at least `min_count` times. Returns the lexicon (words in
    decreasing frequency, then alphabetical) and the words left out for having symbols
    outside the units."""
    counts = Counter(w for s in sentences for w in s)
    lexicon: Lexicon = {}
    skipped = []
    for word, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if count < min_count:
            continue
        units = spell(word, tokenizer)
        if units is None:
            skipped.append(word)
        else:
            lexicon[word] = [units]
    return lexicon, skipped


def write_lexicon(lexicon: Lexicon, path: str | os.PathLike) -> None:
    """One `word unit ...` line per spelling, atomically."""
    atomic_write_text(path, "".join(f"{word} {' '.join(units)}\n"
                                    for word, spellings in lexicon.items()
                                    for units in spellings))


def read_lexicon(path: str | os.PathLike, tokenizer: Tokenizer) -> Lexicon:
    """Read and check a lexicon file against the model's units (module docstring)."""
    fix = "write it with `sprune lexicon RUN --data DIR --out FILE` for this run's units"
    try:
        text = open(path, encoding="utf-8").read()
    except FileNotFoundError:
        raise UserError(f"lexicon {path} does not exist; {fix}") from None
    except IsADirectoryError:
        raise UserError(f"lexicon {path} is a folder, not a file; {fix}") from None
    except UnicodeDecodeError as err:
        raise UserError(f"lexicon {path} is not UTF-8 text (byte {err.start}); {fix}") from None
    lexicon: Lexicon = {}
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        word, units = fields[0], fields[1:]
        where = f"lexicon {path} line {number}"
        if not units:
            raise UserError(f"{where}: word '{word}' has no spelling; give `word unit unit ...`")
        unknown = [u for u in units if u not in tokenizer.index or u == BLANK]
        if unknown:
            raise UserError(f"{where}: unit '{unknown[0]}' of word '{word}' is not one of the "
                            f"model's {tokenizer.vocab_size} units ({tokenizer.kind}); {fix}")
        if word == UNK_WORD:
            raise UserError(f"{where}: '{UNK_WORD}' is reserved for unknown words; remove it")
        lexicon.setdefault(word, [])
        if units not in lexicon[word]:
            lexicon[word].append(units)
    if not lexicon:
        raise UserError(f"lexicon {path} is empty; {fix}")
    return lexicon
