"""Methods that fix a mask before fine-tuning and train that subnetwork (hard mask):
random pruning (RP) and magnitude pruning at the pretrained initialisation (MPI), paper 001."""
from __future__ import annotations

from pathlib import Path

from sprune.prune.methods.base import Method, MethodOutcome, PruneContext, finish, run_training
from sprune.prune.methods.callbacks import HardMaskCallback


class FixedMaskMethod(Method):
    """Mask theta_0 with `criterion` at the target sparsity, then fine-tune the subnetwork."""

    criterion = "magnitude"

    def run(self, ctx: PruneContext, out_dir: Path, retrain: bool = True) -> MethodOutcome | None:
        model = ctx.build_model()
        mask = self.make_mask(model, ctx, self.config.sparsity, criterion=self.criterion)
        if not retrain:
            mask.save(out_dir / "mask", groups=ctx.groups)
            return None
        summary = run_training(ctx, model, out_dir / "finetune", [HardMaskCallback(mask)])
        return finish(self, ctx, model, mask, out_dir, summary["passes"])
