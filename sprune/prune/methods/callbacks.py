"""Trainer callbacks that pruning methods are made of."""
from __future__ import annotations

from typing import Any, Callable

import torch

from sprune.prune.apply import HardMask, zero_pruned
from sprune.prune.mask import Mask
from sprune.training import Callback, Trainer


class HardMaskCallback(Callback):
    """Train a fixed subnetwork: pruned weights stay exactly zero (RP, MPI, OMP, IMP levels,
    ticket retraining). Weights, gradients and Adam moments of pruned entries are zeroed."""

    name = "hard_mask"

    def __init__(self, mask: Mask) -> None:
        self.mask = mask
        self._hard: HardMask | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        self._hard = HardMask(trainer.model, self.mask).attach(trainer.optimizer)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._hard is not None:
            self._hard.detach()


class RepruneCallback(Callback):
    """PARP's adjust-and-re-prune loop (paper 001, Algorithm 1).

    Pruned weights are zeroed but stay trainable. Every `every` updates the current weights
    are pruned again, at `sparsity_at(step)`, by `make_mask(model, sparsity)`; after the last
    update a final re-prune at `sparsity_at(max_steps)` leaves exactly the target sparsity.
    The final re-prune happens in `on_step_end` of the last update, so the run's last
    evaluation and checkpoint already see the pruned model.
    """

    name = "reprune"

    def __init__(self, initial_mask: Mask, every: int,
                 sparsity_at: Callable[[int, int], float],
                 make_mask: Callable[[torch.nn.Module, float], Mask]) -> None:
        self.mask = initial_mask
        self.every = every
        self.sparsity_at = sparsity_at   # (step, max_steps) -> sparsity
        self.make_mask = make_mask
        self.repruned_at: list[int] = []

    def on_train_start(self, trainer: Trainer) -> None:
        if trainer.step == trainer.initial_step:
            zero_pruned(trainer.model, self.mask)

    def on_step_end(self, trainer: Trainer) -> None:
        last = trainer.step >= trainer.max_steps
        if trainer.step % self.every == 0 or last:
            sparsity = self.sparsity_at(trainer.step, trainer.max_steps)
            self.mask = self.make_mask(trainer.model, sparsity)
            zero_pruned(trainer.model, self.mask)
            self.repruned_at.append(trainer.step)
            trainer.log("reprune", sparsity=sparsity)

    def state_dict(self) -> dict[str, Any]:
        return {"mask": dict(self.mask.items()), "repruned_at": self.repruned_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.mask = Mask(state["mask"])
            self.repruned_at = list(state["repruned_at"])


class SnapshotCallback(Callback):
    """Save the model weights as checkpoint/<name> when the run reaches update `at_step`
    (IMP's rewind point theta_k)."""

    name = "snapshot"

    def __init__(self, at_step: int, snapshot_name: str = "rewind") -> None:
        self.at_step = at_step
        self.snapshot_name = snapshot_name

    def on_train_start(self, trainer: Trainer) -> None:
        if self.at_step == trainer.step == 0:
            trainer.save_model(self.snapshot_name)

    def on_step_end(self, trainer: Trainer) -> None:
        if trainer.step == self.at_step:
            trainer.save_model(self.snapshot_name)
