"""Mean and spread of a score over seeds, and when a difference is smaller than the spread.

The reports of the recipes (`sprune results`, `sprune analyze`, `sprune pathways results`)
show a cell as mean ± sample standard deviation over its seeds and mark a difference to a
reference cell "(n.s.)" (not significant at this number of seeds) when it is smaller than the
larger standard deviation of the two cells. With a single seed there is no spread; the
reports can use a *noise floor* instead: how far a score measured on N test utterances moves
by test-set sampling alone (`noise_floor`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

Z95 = 1.96   # two-sided 95 % quantile of the normal distribution
NOT_SIGNIFICANT = " (n.s.)"


class Spread(Protocol):
    """Anything with a number of values and their standard deviation (a `Cell`, a row of a
    results table)."""

    @property
    def n(self) -> int: ...

    @property
    def std(self) -> float: ...


@dataclass(frozen=True)
class Cell:
    """The values (fractions, one per seed) of one table cell."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation (n - 1); 0.0 for a single value."""
        if self.n < 2:
            return 0.0
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def text(self, percent: bool = True) -> str:
        """'21.0 ± 1.4' (in % by default); a single value has no '±'."""
        scale = 100.0 if percent else 1.0
        if self.n < 2:
            return f"{scale * self.mean:.1f}"
        return f"{scale * self.mean:.1f} ± {scale * self.std:.1f}"


def spread(a: Spread, b: Spread, floor: float | None = None) -> float | None:
    """What a difference between `a` and `b` must exceed to count: the larger standard
    deviation of the two when both have two values or more, else `floor` (None: unknown)."""
    if a.n > 1 and b.n > 1:
        return max(a.std, b.std)
    return floor


def not_significant(a: Cell, b: Cell, floor: float | None = None) -> bool:
    """Whether |mean a - mean b| is smaller than `spread(a, b, floor)` (False when the
    spread is unknown)."""
    limit = spread(a, b, floor)
    return limit is not None and abs(a.mean - b.mean) < limit


def marked(cell: Cell, reference: Cell | None, floor: float | None = None) -> str:
    """`cell.text()`, plus " (n.s.)" when its difference to `reference` is not significant
    (no mark against itself or without a reference)."""
    text = cell.text()
    if reference is not None and reference is not cell and \
            not_significant(cell, reference, floor):
        text += NOT_SIGNIFICANT
    return text


def noise_floor(p: float, n: int, z: float = Z95) -> float:
    """Half-width of the 95 % interval of a score p measured as a mean over n test
    utterances of values in [0, 1]: z * sqrt(p (1 - p) / n).

    For an accuracy this is the binomial standard error times z. For an error rate averaged
    over utterances, p (1 - p) bounds the variance of a [0, 1]-valued per-utterance rate with
    mean p, so the same expression is an upper bound (rates above 1 are clipped to 1 in p).
    It counts only the sampling noise of the test set; seed-to-seed training noise comes on
    top and needs several seeds to measure."""
    if n <= 0:
        raise ValueError(f"noise_floor needs a positive number of test utterances, got {n}")
    p = min(max(p, 0.0), 1.0)
    return z * math.sqrt(p * (1.0 - p) / n)
