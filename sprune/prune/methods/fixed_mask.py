"""Methods that fix a mask before fine-tuning and train that subnetwork (hard mask):
random pruning (RP) and magnitude pruning at the pretrained initialisation (MPI), paper 001.
With `mask_from` the mask is taken from another run instead (mask transfer)."""
from __future__ import annotations

from pathlib import Path

from sprune.prune.methods.base import Method, MethodOutcome, PruneContext, finish, run_training
from sprune.prune.methods.callbacks import HardMaskCallback


class FixedMaskMethod(Method):
    """Mask theta_0 with `criterion` at the target sparsity, then fine-tune the subnetwork."""

    criterion = "magnitude"
    takes_mask_from = True

    def run(self, ctx: PruneContext, out_dir: Path, retrain: bool = True) -> MethodOutcome | None:
        model = ctx.build_model()
        if self.config.mask_from:
            mask = self.given_mask(model, ctx, self.config.sparsity)
        else:
            mask = self.make_mask(model, ctx, self.config.sparsity, criterion=self.criterion)
        if not retrain:
            mask.save(out_dir / "mask", groups=ctx.groups)
            return None
        summary = run_training(ctx, model, out_dir / "finetune", [HardMaskCallback(mask)])
        extra = {"mask_from": self.config.mask_from} if self.config.mask_from else {}
        return finish(self, ctx, model, mask, out_dir, summary["passes"], extra=extra,
                      dev=summary.get("final_metrics"))
