"""PARP: prune, adjust, re-prune (paper 001, Algorithm 1), in a single fine-tuning run.

1. initial subnetwork: MPI (magnitude on theta_0) at the target sparsity;
2. zero the pruned weights but let every weight train; every `reprune_every` updates prune
   the current weights by magnitude at the target again; the last update ends with a final
   re-prune, so the returned model is exactly at the target sparsity.

The config's `criterion` replaces magnitude in steps 1 and 2 (taylor / wanda score on
`criterion_batches` training batches at each re-prune, leaving the run's gradients, modes
and RNG untouched, so a killed run still resumes to the same result).

With `mask_from` the initial subnetwork is the given mask instead of MPI's (paper 001
Sec. 4.3: PARP from another language's OMP mask); its sparsity must be the initial one.
"""
from __future__ import annotations

from pathlib import Path

from torch import nn

from sprune.errors import UserError
from sprune.prune.mask import Mask
from sprune.prune.methods.base import Method, MethodOutcome, PruneContext, finish, run_training
from sprune.prune.methods.callbacks import RepruneCallback


class PARP(Method):
    name = "parp"
    takes_mask_from = True
    given_sparsity: float | None = None    # sparsity of the `mask_from` mask, once loaded

    def initial_sparsity(self) -> float:
        return self.config.sparsity

    def sparsity_at(self, step: int, max_steps: int) -> float:
        return self.config.sparsity

    def mask_from_sparsity(self) -> float:
        return self.initial_sparsity()

    def check_inputs(self, model: nn.Module, ctx: PruneContext) -> None:
        self.check_reprune_every()
        super().check_inputs(model, ctx)

    def check_reprune_every(self) -> None:
        if self.config.reprune_every < 1:
            raise UserError(f"reprune_every must be >= 1, got {self.config.reprune_every}")

    def run(self, ctx: PruneContext, out_dir: Path, retrain: bool = True) -> MethodOutcome:
        """PARP finds and fine-tunes its subnetwork in one run: `retrain` has no effect."""
        self.check_reprune_every()
        model = ctx.build_model()
        if self.config.mask_from:
            initial = self.given_mask(model, ctx)
            self.given_sparsity = initial.sparsity()
            self.check_given_sparsity(initial, self.initial_sparsity())
        else:
            initial = self.make_mask(model, ctx, self.initial_sparsity())
        callback = RepruneCallback(
            initial, self.config.reprune_every, self.sparsity_at,
            lambda m, s: self.make_mask(m, ctx, s))
        summary = run_training(ctx, model, out_dir / "finetune", [callback])
        # The callback holds the final mask; a run finished earlier left only its weights,
        # whose zeros are that mask.
        final = (callback.mask if callback.repruned_at
                 else Mask.from_nonzero(model, self.scope_names(model, ctx)))
        initial.save(out_dir / "initial_mask", groups=ctx.groups)
        extra = {"iou_with_initial_mask": final.iou(initial),
                 "initial_sparsity": self.initial_sparsity()}
        if self.config.mask_from:
            extra["mask_from"] = self.config.mask_from
        return finish(self, ctx, model, final, out_dir, summary["passes"], extra=extra,
                      dev=summary.get("final_metrics"))
