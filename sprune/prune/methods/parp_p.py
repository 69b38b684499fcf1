"""PARP-P: progressive PARP (paper 001, Sec. 3.3).

Same single run as PARP, but the initial MPI subnetwork is less sparse (`initial_sparsity`,
default target - 0.2; the paper starts at 60-70 % for a 90 % target) and each re-prune uses
a sparsity that grows from the initial one to the target by `progressive_until` of the
updates (linear or cubic, Zhu & Gupta 2017), then holds the target. With `mask_from` the
initial sparsity defaults to the given mask's.
"""
from __future__ import annotations

from sprune.errors import UserError
from sprune.prune.methods.parp import PARP
from sprune.prune.schedule import Incremental
from sprune.prune.select import check_sparsity


class PARPProgressive(PARP):
    name = "parp-p"

    def initial_sparsity(self) -> float:
        c = self.config
        if c.initial_sparsity is not None:
            start = c.initial_sparsity
        elif self.given_sparsity is not None:   # start where the given mask is
            start = self.given_sparsity
        else:
            start = max(0.0, c.sparsity - 0.2)
        check_sparsity(start)
        if start > c.sparsity:
            raise UserError(f"initial_sparsity {start} is above the target {c.sparsity}; "
                            "PARP-P prunes progressively up to the target")
        return start

    def sparsity_at(self, step: int, max_steps: int) -> float:
        c = self.config
        until = max(1, int(c.progressive_until * max_steps))
        every = max(1, min(c.reprune_every, until))
        schedule = Incremental(self.initial_sparsity(), c.sparsity, start=0,
                               steps=max(1, until // every), every=every,
                               power=1 if c.progressive_schedule == "linear" else 3)
        return schedule.sparsity_at(step)
