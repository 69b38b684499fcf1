"""Dense fine-tuning: the unpruned baseline every method is compared with."""
from __future__ import annotations

from pathlib import Path

from sprune.prune.mask import Mask
from sprune.prune.methods.base import Method, MethodOutcome, PruneContext, finish, run_training


class Dense(Method):
    name = "dense"

    def run(self, ctx: PruneContext, out_dir: Path) -> MethodOutcome:
        model = ctx.build_model()
        summary = run_training(ctx, model, out_dir / "finetune")
        mask = Mask.ones_like(model, self.scope_names(model, ctx))
        return finish(self, ctx, model, mask, out_dir, summary["passes"])
