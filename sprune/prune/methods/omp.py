"""OMP: one-shot magnitude pruning (paper 001, Sec. 2.2).

1. fine-tune theta_0 on the task (the recipe's dense run, `ctx.dense_dir`),
2. prune the fine-tuned weights theta_l by magnitude (or the config's `criterion`; taylor
   and wanda score theta_l on training batches) at the target sparsity -> mask m,
3. sub-fine-tune the subnetwork m * theta_0 (weights rewound to the pretrained ones).
Fine-tuning passes = the dense run's + the sub-fine-tuning's.

With `mask_from` (cross-lingual mask transfer, paper 001 Sec. 4.3) steps 1-2 are replaced by
the given mask (e.g. OMP's mask for another language) and no dense run is needed; passes
count this run's sub-fine-tuning only.
"""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from sprune.errors import UserError
from sprune.prune.methods.base import (Method, MethodOutcome, PruneContext, finish,
                                       load_model_state, run_training)
from sprune.prune.methods.callbacks import HardMaskCallback


class OneShotMagnitudePruning(Method):
    name = "omp"
    needs_dense = True
    takes_mask_from = True

    def check_inputs(self, model: nn.Module, ctx: PruneContext) -> None:
        """Without mask_from: the dense run is finished and its weights fit the model."""
        super().check_inputs(model, ctx)
        if not self.config.mask_from:
            load_model_state(model, self.dense_dir(ctx) / "final")

    def dense_dir(self, ctx: PruneContext) -> Path:
        dense = ctx.dense_dir
        if dense is None or not (dense / "final").is_dir() or not (dense / "outcome.json").is_file():
            raise UserError(f"OMP needs a finished dense fine-tuning run; {dense} has none "
                            "(run the recipe's dense stage first)")
        return dense

    def run(self, ctx: PruneContext, out_dir: Path, retrain: bool = True) -> MethodOutcome | None:
        if self.config.mask_from:
            return self.run_given_mask(ctx, out_dir, retrain)
        dense = self.dense_dir(ctx)
        finetuned = ctx.build_model()
        load_model_state(finetuned, dense / "final")
        mask = self.make_mask(finetuned, ctx, self.config.sparsity)
        del finetuned
        if not retrain:
            mask.save(out_dir / "mask", groups=ctx.groups)
            return None
        model = ctx.build_model()   # theta_0 again
        summary = run_training(ctx, model, out_dir / "subfinetune", [HardMaskCallback(mask)])
        dense_passes = json.loads((dense / "outcome.json").read_text())["passes"]
        return finish(self, ctx, model, mask, out_dir, dense_passes + summary["passes"],
                      extra={"dense_passes": dense_passes}, dev=summary.get("final_metrics"))

    def run_given_mask(self, ctx: PruneContext, out_dir: Path, retrain: bool
                       ) -> MethodOutcome | None:
        model = ctx.build_model()   # theta_0
        mask = self.given_mask(model, ctx, self.config.sparsity)
        if not retrain:
            mask.save(out_dir / "mask", groups=ctx.groups)
            return None
        summary = run_training(ctx, model, out_dir / "subfinetune", [HardMaskCallback(mask)])
        return finish(self, ctx, model, mask, out_dir, summary["passes"],
                      extra={"mask_from": self.config.mask_from},
                      dev=summary.get("final_metrics"))
