"""RP: random pruning of the pretrained weights, then subnetwork fine-tuning (paper 001)."""
from __future__ import annotations

from sprune.errors import UserError
from sprune.prune.methods.base import PruneConfig
from sprune.prune.methods.fixed_mask import FixedMaskMethod


class RandomPruning(FixedMaskMethod):
    """The mask is random by definition (seeded by `seed`): criterion random. The config's
    default criterion (magnitude) is ignored; naming a data-driven one is a UserError,
    since it would have no effect."""

    name = "rp"
    criterion = "random"

    def __init__(self, config: PruneConfig) -> None:
        # magnitude is PruneConfig's default, so it cannot tell "unset" from "asked for"
        if config.criterion not in ("random", "magnitude"):
            raise UserError(f"method 'rp' prunes at random; criterion '{config.criterion}' "
                            "has no effect: drop it (or use mpi / omp with it)")
        super().__init__(config)
