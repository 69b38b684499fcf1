"""Adaptive masking (paper 003, "Dynamic ASR Pathways", monolingual case), in one run.

Start from a mask at the first sparsity of the schedule s_0 < s_1 < ... < s_K = target
(`mask_from`: an IMP / LTH mask or any mask file; else magnitude on the pretrained weights,
MPI), then K + 1 rounds of T = `round_steps` updates each:

    round r, updates 1 .. n       train m_r ⊙ theta (pruned weights frozen at zero)
    update n (`adapt_at`)         adaptation: re-prune from *all* weights at s_r; weights
                                  that come back re-enter with the value they had when they
                                  were pruned and train again
    updates n + 1 .. T            train the adapted mask
    update T (r < K)              pruning step: raise the sparsity to s_{r+1}, pruning among
                                  the kept weights (what is pruned stays pruned); none when
                                  s_{r+1} = s_r (rounds at one sparsity only adapt)

The returned model has the last round's adapted mask, at the target.

Where the summary of the paper is silent we take the standard choices and say so:
- "re-prune from all weights" reads the weights as theta with the mask applied in the
  forward pass (m ⊙ theta), so a pruned weight keeps its value while it is out; here it
  is zero in the model (so the model on disk is the pruned one) and its value waits in a
  shadow copy that comes back at the adaptation;
- the schedule's default is `rounds` equal steps from `initial_sparsity` (default target
  - 0.2, as PARP-P) to the target, e.g. 0.5 -> 0.6 -> 0.7; the run's length is
  (K + 1) x T updates, which replaces `train.max_steps` / `train.epochs`;
- the config's `criterion` scores weights at the adaptation and the pruning step
  (magnitude by default, as IMP, which the paper builds on);
- weights that come back start with fresh optimizer moments (the pruned ones' are zero).

Every adaptation and pruning step saves its mask (`rounds/<step>_<kind>/`), so the drift
between rounds can be plotted (`sprune.prune.pathway_stats`); outcome.json lists the IOU of
each new mask with the one before.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from sprune.errors import UserError
from sprune.prune.apply import HardMask
from sprune.prune.mask import Mask
from sprune.prune.methods.base import (Method, MethodOutcome, PruneConfig, PruneContext,
                                       finish, run_training)
from sprune.prune.select import check_sparsity
from sprune.training import Callback, Trainer


def sparsity_schedule(config: PruneConfig) -> list[float]:
    """The sparsity of each round: `sparsity_schedule`, or `rounds` equal steps from
    `initial_sparsity` (default target - 0.2, at least 0) to the target. Checked: each in
    [0, 1), never decreasing, ending at `sparsity`."""
    target = check_sparsity(config.sparsity)
    if config.sparsity_schedule:
        schedule = [check_sparsity(s) for s in config.sparsity_schedule]
        if abs(schedule[-1] - target) > 1e-9:
            raise UserError(f"sparsity_schedule {config.sparsity_schedule} ends at "
                            f"{schedule[-1]} but the target sparsity is {target}; end the "
                            "schedule at the target (or pass --sparsity to match it)")
    else:
        if isinstance(config.rounds, bool) or not isinstance(config.rounds, int) \
                or config.rounds < 1:
            raise UserError(f"rounds: {config.rounds!r} must be a whole number >= 1")
        start = (check_sparsity(config.initial_sparsity) if config.initial_sparsity is not None
                 else max(0.0, target - 0.2))
        if config.rounds == 1:
            schedule = [target]
        else:
            schedule = [start + (target - start) * r / (config.rounds - 1)
                        for r in range(config.rounds)]
    for before, after in zip(schedule, schedule[1:]):
        if after < before:
            raise UserError(f"the sparsity schedule {[round(s, 4) for s in schedule]} "
                            "decreases; adaptive pruning only raises the sparsity from round "
                            "to round (fix sparsity_schedule or initial_sparsity)")
    return schedule


def check_rounds(config: PruneConfig) -> None:
    """`round_steps` T >= 2 and 1 <= `adapt_at` n < T (one-line errors)."""
    T, n = config.round_steps, config.adapt_at
    if isinstance(T, bool) or not isinstance(T, int) or T < 2:
        raise UserError(f"round_steps: {T!r} must be a whole number >= 2 (updates per round)")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < T:
        raise UserError(f"adapt_at: {n!r} must be a whole number in [1, round_steps) = "
                        f"[1, {T}); the adaptation happens inside a round")


def round_event(done: int, round_steps: int, adapt_at: int, schedule: list[float]
                ) -> tuple[str, float] | None:
    """What happens after update `done` of a run of rounds: ("adapt", s_r) at update
    `adapt_at` of round r, ("prune", s_r) when round r >= 1 starts at a higher sparsity
    than round r - 1, else None."""
    round_index, within = divmod(done, round_steps)
    if within == adapt_at and round_index < len(schedule):
        return "adapt", schedule[round_index]
    if within == 0 and 1 <= round_index < len(schedule) \
            and schedule[round_index] > schedule[round_index - 1]:
        return "prune", schedule[round_index]
    return None


class AdaptiveMaskCallback(Callback):
    """The adaptation and pruning steps of the module docstring inside one training run.

    `select(model, sparsity, previous)` -> a mask of the model's current weights (previous:
    None for an adaptation from all weights, else the mask whose pruned weights stay pruned);
    `save(name, mask)` keeps each new mask. State for a resume: the mask, the shadow values
    of the pruned weights and the list of events.
    """

    name = "adaptive"

    def __init__(self, initial: Mask, round_steps: int, adapt_at: int, schedule: list[float],
                 select: Callable[[nn.Module, float, Mask | None], Mask],
                 save: Callable[[str, Mask], None]) -> None:
        self.mask = initial
        self.round_steps, self.adapt_at, self.schedule = round_steps, adapt_at, schedule
        self.select, self.save = select, save
        self.shadow: dict[str, torch.Tensor] | None = None
        self.events: list[dict[str, Any]] = []
        self._hard: HardMask | None = None

    def on_train_start(self, trainer: Trainer) -> None:
        params = dict(trainer.model.named_parameters())
        if self.shadow is None:   # a fresh run: the pruned weights leave for the shadow
            with torch.no_grad():
                self.shadow = {n: torch.where(self.mask[n].to(params[n].device), 0.0,
                                              params[n].detach()) for n in self.mask}
        self._hard = HardMask(trainer.model, self.mask).attach(trainer.optimizer)

    def on_step_end(self, trainer: Trainer) -> None:
        event = round_event(trainer.step - trainer.initial_step, self.round_steps,
                            self.adapt_at, self.schedule)
        if event is None:
            return
        kind, sparsity = event
        if kind == "adapt":
            self._restore(trainer.model)
        previous = self.mask if kind == "prune" else None
        self._switch(trainer, self.select(trainer.model, sparsity, previous), kind, sparsity)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._hard is not None:
            self._hard.detach()

    def _restore(self, model: nn.Module) -> None:
        """Pruned weights take their shadow values back: the model holds all of theta."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for n, keep in self.mask.items():
                p = params[n]
                p.copy_(torch.where(keep.to(p.device), p, self.shadow[n].to(p.device)))

    def _switch(self, trainer: Trainer, new: Mask, kind: str, sparsity: float) -> None:
        """Make `new` the mask: its pruned weights go to the shadow (their values kept, from
        the model where it holds them, else from the shadow) and to zero in the model."""
        params = dict(trainer.model.named_parameters())
        with torch.no_grad():
            for n, keep in new.items():
                p = params[n]
                theta = torch.where(self.mask[n].to(p.device), p, self.shadow[n].to(p.device))
                self.shadow[n] = torch.where(keep.to(p.device), 0.0, theta)
        previous, self.mask = self.mask, new
        if self._hard is not None:
            self._hard.detach()
        self._hard = HardMask(trainer.model, new).attach(trainer.optimizer)
        event = {"step": trainer.step, "kind": kind, "sparsity": new.sparsity(),
                 "target": sparsity, "iou_with_previous": new.iou(previous)}
        self.events.append(event)
        self.save(f"{trainer.step:06d}_{kind}", new)
        trainer.log(kind, **{k: v for k, v in event.items() if k != "kind"})

    def state_dict(self) -> dict[str, Any]:
        return {"mask": dict(self.mask.items()), "shadow": dict(self.shadow or {}),
                "events": self.events}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            self.mask = Mask(state["mask"])
            self.shadow = dict(state["shadow"])
            self.events = list(state["events"])


class AdaptivePruning(Method):
    name = "adaptive"
    takes_mask_from = True

    def __init__(self, config: PruneConfig) -> None:
        super().__init__(config)
        check_rounds(config)    # bad rounds fail now, not after the data is loaded
        self.schedule = sparsity_schedule(config)

    def mask_from_sparsity(self) -> float:
        return self.schedule[0]

    def run(self, ctx: PruneContext, out_dir: Path, retrain: bool = True) -> MethodOutcome:
        """Masks and weights are found in one run: `retrain` has no effect."""
        c = self.config
        schedule = self.schedule
        model = ctx.build_model()
        if c.mask_from:
            initial = self.given_mask(model, ctx, expected_sparsity=schedule[0])
        else:
            initial = self.make_mask(model, ctx, schedule[0])
        initial.save(out_dir / "initial_mask", groups=ctx.groups)
        callback = AdaptiveMaskCallback(
            initial, c.round_steps, c.adapt_at, schedule,
            lambda m, s, previous: self.make_mask(m, ctx, s, previous=previous),
            lambda name, mask: mask.save(out_dir / "rounds" / name, groups=ctx.groups))
        train = dataclasses.replace(ctx.train_config, max_steps=len(schedule) * c.round_steps)
        summary = run_training(ctx, model, out_dir / "finetune", [callback], train)
        final = (callback.mask if callback.events
                 else Mask.from_nonzero(model, self.scope_names(model, ctx)))
        extra = {"schedule": schedule, "round_steps": c.round_steps, "adapt_at": c.adapt_at,
                 "events": callback.events, "iou_with_initial_mask": final.iou(initial)}
        if c.mask_from:
            extra["mask_from"] = c.mask_from
        return finish(self, ctx, model, final, out_dir, summary["passes"], extra=extra,
                      dev=summary.get("final_metrics"))
