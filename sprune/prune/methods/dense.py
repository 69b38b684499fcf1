"""Dense fine-tuning: the unpruned baseline every method is compared with."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from sprune.prune.mask import Mask
from sprune.prune.methods.base import Method, PruneConfig, MethodOutcome, PruneContext, finish, run_training


class Dense(Method):
    """Fine-tune every weight; the outcome reports target and achieved sparsity 0."""

    name = "dense"

    def __init__(self, config: PruneConfig) -> None:
        super().__init__(dataclasses.replace(config, sparsity=0.0))

    def run(self, ctx: PruneContext, out_dir: Path, retrain: bool = True) -> MethodOutcome:
        model = ctx.build_model()
        summary = run_training(ctx, model, out_dir / "finetune")
        mask = Mask.ones_like(model, self.scope_names(model, ctx))
        return finish(self, ctx, model, mask, out_dir, summary["passes"],
                      dev=summary.get("final_metrics"))
