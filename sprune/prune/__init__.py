"""The mask engine: masks, criteria (score), scoring with data (`score_parameters`),
selection (score -> mask), scopes, schedules, and the two ways to apply a mask to a model
(hard, PARP-style)."""
from __future__ import annotations

from sprune.prune.apply import HardMask, actual_mask, weight_sparsity, zero_pruned
from sprune.prune.criteria import (CRITERIA, Criterion, Magnitude, Random, TaylorFirstOrder,
                                   Wanda, make_criterion)
from sprune.prune.mask import Mask, layer_of, named_tensors
from sprune.prune.schedule import (Incremental, OneShot, imp_schedule, imp_sparsity,
                                   levels_to_reach, make_schedule)
from sprune.prune.scope import PRESETS, Scope, resolve_scope
from sprune.prune.select import Granularity, check_sparsity, kth_smallest, select_mask
from sprune.prune.statistics import score_parameters

__all__ = [
    "CRITERIA", "Criterion", "Granularity", "HardMask", "Incremental", "Magnitude", "Mask",
    "OneShot", "PRESETS", "Random", "Scope", "TaylorFirstOrder", "Wanda", "actual_mask",
    "check_sparsity", "imp_schedule", "imp_sparsity", "kth_smallest", "layer_of",
    "levels_to_reach", "make_criterion", "make_schedule", "named_tensors", "resolve_scope",
    "score_parameters", "select_mask", "weight_sparsity", "zero_pruned",
]
