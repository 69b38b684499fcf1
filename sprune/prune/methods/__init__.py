"""Pruning methods, one file each, registered by name (`method:` in conf/prune_*.yaml)."""
from __future__ import annotations

from pathlib import Path

from sprune.errors import UserError
from sprune.prune.mask import MASK_FILE
from sprune.prune.criteria import make_criterion
from sprune.prune.select import Granularity
from sprune.prune.methods.base import Method, MethodOutcome, PruneConfig, PruneContext
from sprune.prune.methods.dense import Dense
from sprune.prune.methods.imp import IterativeMagnitudePruning
from sprune.prune.methods.mpi import MagnitudePruningAtInit
from sprune.prune.methods.omp import OneShotMagnitudePruning
from sprune.prune.methods.parp import PARP
from sprune.prune.methods.parp_p import PARPProgressive
from sprune.prune.methods.rp import RandomPruning

METHODS: dict[str, type[Method]] = {m.name: m for m in (
    Dense, RandomPruning, MagnitudePruningAtInit, OneShotMagnitudePruning,
    IterativeMagnitudePruning, PARP, PARPProgressive)}


def make_method(config: PruneConfig) -> Method:
    """The method named by `config.method`; an unknown name is a UserError listing the known."""
    if config.method not in METHODS:
        raise UserError(f"unknown pruning method '{config.method}'; known: {', '.join(METHODS)}")
    if config.criterion == "taylor" and config.method != "dense":
        raise UserError("criterion 'taylor' needs accumulated gradients, which the unstructured "
                        "fine-tuning methods do not collect; use magnitude or random")
    # Fail on a bad name now, not after the data is loaded.
    make_criterion(config.criterion, **({"seed": 0} if config.criterion == "random" else {}))
    Granularity.parse(config.granularity)
    method = METHODS[config.method](config)
    if config.mask_from is not None:
        path = Path(config.mask_from)
        if not (path.is_file() or (path / MASK_FILE).is_file()):
            raise UserError(f"mask_from {path}: no mask there; give a run's mask/ folder or a "
                            "mask .safetensors file written by sprune")
    return method


__all__ = ["METHODS", "Method", "MethodOutcome", "PruneConfig", "PruneContext", "make_method"]
