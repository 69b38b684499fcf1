"""MPI: magnitude pruning at the pretrained initialisation, then subnetwork fine-tuning
(paper 001). The criterion is the config's (magnitude by default)."""
from __future__ import annotations

from pathlib import Path

from sprune.prune.methods.base import MethodOutcome, PruneContext
from sprune.prune.methods.fixed_mask import FixedMaskMethod


class MagnitudePruningAtInit(FixedMaskMethod):
    name = "mpi"

    def run(self, ctx: PruneContext, out_dir: Path, retrain: bool = True) -> MethodOutcome | None:
        self.criterion = self.config.criterion
        return super().run(ctx, out_dir, retrain)
