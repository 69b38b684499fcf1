"""Pruning criteria: score every weight; a low score means "prune me first".

Every criterion has the same small interface so that methods can swap them by name:

    criterion = make_criterion("taylor")
    for batch in batches:                  # only criteria with needs_gradients use these
        loss(model, batch).backward()
        criterion.accumulate(model)
    scores = criterion.scores(params, names)   # name -> float32 tensor, the parameter's shape

The scores go to `sprune.prune.select`, which turns them into a mask.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from sprune.errors import UserError
from sprune.prune.mask import named_tensors

Scores = dict[str, torch.Tensor]


def _chosen(tensors: Mapping[str, torch.Tensor], names: Sequence[str] | None) -> list[str]:
    chosen = list(tensors) if names is None else list(names)
    for name in chosen:
        if name not in tensors:
            raise UserError(f"parameter '{name}' is not in the model; check the pruning scope")
    return chosen


class Criterion:
    """Base class: `scores(params, names)` -> name -> float32 score tensor (CPU or the
    parameter's device), same shape as the parameter."""

    name = ""
    needs_gradients = False

    def accumulate(self, model: nn.Module | Mapping[str, torch.Tensor]) -> None:
        """Collect statistics after a backward pass (no-op for data-free criteria)."""

    def scores(self, params: nn.Module | Mapping[str, torch.Tensor],
               names: Sequence[str] | None = None) -> Scores:
        raise NotImplementedError


class Magnitude(Criterion):
    """|w|: the unstructured magnitude pruning (UMP) criterion of PARP, OMP, IMP and MPI."""

    name = "magnitude"

    def scores(self, params: nn.Module | Mapping[str, torch.Tensor],
               names: Sequence[str] | None = None) -> Scores:
        tensors = named_tensors(params)
        return {n: tensors[n].detach().abs().float() for n in _chosen(tensors, names)}


class Random(Criterion):
    """Uniform scores in [0, 1) from a seeded generator: random pruning (RP).

    The scores depend only on the seed, the parameter order and shapes (drawn on the CPU),
    so the same seed gives the same mask on any device.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def scores(self, params: nn.Module | Mapping[str, torch.Tensor],
               names: Sequence[str] | None = None) -> Scores:
        tensors = named_tensors(params)
        generator = torch.Generator().manual_seed(self.seed)
        return {n: torch.rand(tensors[n].shape, generator=generator)
                for n in _chosen(tensors, names)}


class TaylorFirstOrder(Criterion):
    """First-order Taylor importance |w * dL/dw|, averaged over the batches seen.

    Call `accumulate(model)` after each `loss.backward()`; the per-batch |w * grad| is
    added up (so positive and negative gradients of different batches do not cancel) and
    `scores()` returns the sum divided by the number of batches. `names` restricts which
    parameters are tracked (default: all that have a gradient).
    """

    name = "taylor"
    needs_gradients = True

    def __init__(self, names: Sequence[str] | None = None) -> None:
        self.names = None if names is None else list(names)
        self.batches = 0
        self._sums: dict[str, torch.Tensor] = {}

    def accumulate(self, model: nn.Module | Mapping[str, torch.Tensor]) -> None:
        tensors = named_tensors(model)
        chosen = _chosen(tensors, self.names)
        for name in chosen:
            param = tensors[name]
            if param.grad is None:
                if self.names is None:
                    continue
                raise RuntimeError(f"Taylor criterion: parameter '{name}' has no gradient; "
                                   "call accumulate() after loss.backward()")
            contribution = (param.detach() * param.grad.detach()).abs().float()
            if name in self._sums:
                self._sums[name] += contribution
            else:
                self._sums[name] = contribution.clone()
        self.batches += 1

    def scores(self, params: nn.Module | Mapping[str, torch.Tensor] | None = None,
               names: Sequence[str] | None = None) -> Scores:
        if self.batches == 0:
            raise UserError("the Taylor criterion saw no batches; give it at least one "
                            "batch of training data (criterion batches >= 1)")
        chosen = list(self._sums) if names is None else list(names)
        missing = [n for n in chosen if n not in self._sums]
        if missing:
            raise RuntimeError(f"Taylor criterion: no gradient was accumulated for "
                               f"'{missing[0]}'; is it frozen?")
        return {n: self._sums[n] / self.batches for n in chosen}


CRITERIA: dict[str, type[Criterion]] = {
    Magnitude.name: Magnitude,
    Random.name: Random,
    TaylorFirstOrder.name: TaylorFirstOrder,
}


def make_criterion(name: str, **options) -> Criterion:
    """The criterion registered as `name`, built with `options` (e.g. `seed` for random)."""
    if name not in CRITERIA:
        raise UserError(f"unknown pruning criterion '{name}'; known: "
                        f"{', '.join(sorted(CRITERIA))}")
    try:
        return CRITERIA[name](**options)
    except TypeError:
        raise UserError(f"criterion '{name}' does not take options "
                        f"{sorted(options)}; check the criterion options in the config"
                        ) from None
