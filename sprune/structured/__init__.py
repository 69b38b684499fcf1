"""Task-agnostic structured pruning of the upstream (paper 004).

Hard-concrete L0 gates (`hard_concrete`) on the structures an upstream can lose
(`structures`: per-head query-key / value-output dims, heads, attention blocks, FFN units,
FFN blocks, conv channels), applied by forward hooks (`masked.MaskedUpstream`); the
expected parameter count, target ramp and Lagrangian term (`sparsity`); layer-to-layer
distillation with a learned layer mapping (`distill`); the Trainer task that combines them
(`task`); trained masks on disk (`mask_store`) and physical shrinking (`shrink_from_masks`).
"""
from __future__ import annotations
