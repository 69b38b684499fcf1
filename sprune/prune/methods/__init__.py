"""Pruning methods, one file each, registered by name (`method:` in conf/prune_*.yaml).

Every method but dense scores weights with the config's `criterion`: magnitude (the papers'
choice), random, taylor (|w * dL/dw|, Molchanov et al. 2019) or wanda (|w| * input norm of
nn.Linear weights, Sun et al. 2023); taylor and wanda see `criterion_batches` training
batches with dropout off each time a mask is made (`sprune.prune.statistics`). rp is random
by definition and refuses taylor / wanda; dense ignores the criterion. A combination that
cannot run (wanda on a conv kernel, taylor on a frozen weight) is a one-line UserError.
"""
from __future__ import annotations

from pathlib import Path

from sprune.errors import UserError
from sprune.prune.mask import MASK_FILE
from sprune.prune.criteria import CRITERIA
from sprune.prune.select import Granularity
from sprune.prune.methods.adaptive import AdaptivePruning
from sprune.prune.methods.base import (Method, MethodOutcome, PruneConfig, PruneContext,
                                       build_criterion)
from sprune.prune.methods.dense import Dense
from sprune.prune.methods.imp import IterativeMagnitudePruning
from sprune.prune.methods.mpi import MagnitudePruningAtInit
from sprune.prune.methods.omp import OneShotMagnitudePruning
from sprune.prune.methods.parp import PARP
from sprune.prune.methods.parp_p import PARPProgressive
from sprune.prune.methods.pathways import Pathways
from sprune.prune.methods.rp import RandomPruning

METHODS: dict[str, type[Method]] = {m.name: m for m in (
    Dense, RandomPruning, MagnitudePruningAtInit, OneShotMagnitudePruning,
    IterativeMagnitudePruning, PARP, PARPProgressive, AdaptivePruning, Pathways)}


def make_method(config: PruneConfig) -> Method:
    """The method named by `config.method`; an unknown name is a UserError listing the known."""
    if config.method not in METHODS:
        raise UserError(f"unknown pruning method '{config.method}'; known: {', '.join(METHODS)}")
    # Fail on a bad name now, not after the data is loaded.
    build_criterion(config.criterion)
    Granularity.parse(config.granularity)
    method = METHODS[config.method](config)
    kind = CRITERIA[config.criterion]
    if (config.method != "dense" and (kind.needs_gradients or kind.needs_activations)
            and (isinstance(config.criterion_batches, bool)
                 or not isinstance(config.criterion_batches, int)
                 or config.criterion_batches < 1)):
        raise UserError(f"criterion '{config.criterion}' needs training batches: "
                        f"criterion_batches >= 1 (got {config.criterion_batches!r})")
    if config.mask_from is not None:
        path = Path(config.mask_from)
        if not (path.is_file() or (path / MASK_FILE).is_file()):
            raise UserError(f"mask_from {path}: no mask there; give a run's mask/ folder or a "
                            "mask .safetensors file written by sprune")
    return method


__all__ = ["METHODS", "Method", "MethodOutcome", "PruneConfig", "PruneContext", "make_method"]
