"""RP: random pruning of the pretrained weights, then subnetwork fine-tuning (paper 001)."""
from __future__ import annotations

from sprune.prune.methods.fixed_mask import FixedMaskMethod


class RandomPruning(FixedMaskMethod):
    name = "rp"
    criterion = "random"
