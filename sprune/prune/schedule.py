"""Sparsity schedules: what sparsity the model should have, per IMP level or per step.

* one-shot: the target at once.
* IMP geometric (Frankle et al. 2019; paper 000: p = 0.2): every level prunes a fraction p of
  the weights that are still there, so level i keeps (1 - p)^i and has sparsity 1 - (1 - p)^i.
* incremental (Zhu & Gupta 2017): from step t0, every dt steps for n steps,
  s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n dt))^power; power 3 is the cubic schedule,
  power 1 the linear one. Between pruning steps the sparsity holds its last value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sprune.errors import UserError
from sprune.prune.select import check_sparsity

# 1 - (1 - p)^i is rounded in floating point; a level within this of the target reaches it.
_TOLERANCE = 1e-9


def _check_fraction(p: float) -> float:
    value = float(p)
    if not 0.0 < value < 1.0:
        raise UserError(f"IMP prune fraction {p} is outside (0, 1); give the fraction of the "
                        "remaining weights pruned per level, such as 0.2")
    return value


def imp_sparsity(level: int, p: float) -> float:
    """Sparsity after `level` IMP levels pruning fraction `p` of the remaining weights each."""
    if level < 0:
        raise ValueError(f"IMP level {level} is negative")
    return 1.0 - (1.0 - _check_fraction(p)) ** level


def levels_to_reach(target: float, p: float) -> int:
    """The fewest IMP levels whose sparsity reaches `target` (0 for target 0)."""
    target, p = check_sparsity(target), _check_fraction(p)
    if target == 0.0:
        return 0
    level = max(1, math.ceil(math.log1p(-target) / math.log1p(-p)))
    while level > 1 and imp_sparsity(level - 1, p) >= target - _TOLERANCE:
        level -= 1
    while imp_sparsity(level, p) < target - _TOLERANCE:
        level += 1
    return level


def imp_schedule(target: float, p: float, *, clip: bool = True) -> list[float]:
    """Sparsity of IMP levels 1..L, L = levels_to_reach(target, p).

    With `clip` the last level stops at `target` instead of overshooting it.
    """
    levels = [imp_sparsity(i, p) for i in range(1, levels_to_reach(target, p) + 1)]
    if clip and levels:
        levels[-1] = min(levels[-1], check_sparsity(target))
    return levels


@dataclass(frozen=True)
class OneShot:
    """The target sparsity at every step."""

    target: float

    def __post_init__(self) -> None:
        check_sparsity(self.target)

    def sparsity_at(self, step: int) -> float:
        return self.target

    def is_prune_step(self, step: int) -> bool:
        return step == 0


@dataclass(frozen=True)
class Incremental:
    """Zhu & Gupta's gradual schedule from `initial` to `final` sparsity.

    Pruning happens at steps start, start + every, ..., start + steps * every; `power` 1 is
    linear, 3 is cubic. Before `start` the schedule holds `initial`; after the last pruning
    step it holds `final`.
    """

    initial: float
    final: float
    start: int = 0
    steps: int = 10
    every: int = 1
    power: int = 3

    def __post_init__(self) -> None:
        check_sparsity(self.initial)
        check_sparsity(self.final)
        if self.steps < 1 or self.every < 1 or self.start < 0:
            raise UserError(f"incremental schedule needs steps >= 1, every >= 1 and "
                            f"start >= 0 (got steps={self.steps}, every={self.every}, "
                            f"start={self.start})")
        if self.power < 1:
            raise UserError(f"incremental schedule power {self.power} must be >= 1 "
                            "(1: linear, 3: cubic)")

    @property
    def end(self) -> int:
        return self.start + self.steps * self.every

    def sparsity_at(self, step: int) -> float:
        if step <= self.start:
            return self.initial
        if step >= self.end:
            return self.final
        done = (step - self.start) // self.every * self.every  # last pruning step reached
        remaining = 1.0 - done / (self.steps * self.every)
        # s_f + (s_i - s_f) r^power, written so that r = 1 gives s_i exactly
        return self.initial + (self.final - self.initial) * (1.0 - remaining ** self.power)

    def is_prune_step(self, step: int) -> bool:
        return self.start <= step <= self.end and (step - self.start) % self.every == 0

    def prune_steps(self) -> list[int]:
        return list(range(self.start, self.end + 1, self.every))


SCHEDULES = ("one-shot", "linear", "cubic")


def make_schedule(name: str, *, final: float, initial: float = 0.0, start: int = 0,
                  steps: int = 10, every: int = 1) -> OneShot | Incremental:
    """`one-shot`, `linear` or `cubic`; an unknown name is a UserError listing the known."""
    if name == "one-shot":
        return OneShot(final)
    if name in ("linear", "cubic"):
        return Incremental(initial, final, start, steps, every, 1 if name == "linear" else 3)
    raise UserError(f"unknown sparsity schedule '{name}'; known: {', '.join(SCHEDULES)}")
