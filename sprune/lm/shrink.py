"""Physical shrinking: a structured or rank-pruned LM (weights + `Mask`) -> a smaller dense LM
of the same class whose config holds the per-layer sizes, and which computes the same
log-probs as the masked model (test/test_lm_prune.py checks it for every unit kind).

A head, FFN unit or rank component is kept when any weight it owns is kept by the mask; a
sublayer with none left is dropped (`layer_heads` / `layer_ffn` 0). A factorized feed-forward
sublayer with a factor of rank 0 outputs a constant: it is folded into the block's attention
output bias and dropped too. Parameters the mask does not cover are copied as they are.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from sprune.lm.layers import LowRankLinear
from sprune.lm.model import TransformerLM
from sprune.prune.apply import zero_pruned
from sprune.prune.mask import Mask


def _kept(mask: Mask, pieces: list[tuple[str, int, slice]], units: int) -> torch.Tensor:
    """keep [units]: unit u is kept when any of its slices (param, dim, unit -> slice) is."""
    keep = torch.zeros(units, dtype=torch.bool)
    for name, dim, width in pieces:
        if name not in mask:
            return torch.ones(units, dtype=torch.bool)
        per_unit = mask[name].movedim(dim, 0).reshape(units, width, -1)
        keep |= per_unit.flatten(1).any(dim=1)
    return keep


def _indices(keep: torch.Tensor, width: int = 1) -> torch.Tensor:
    """Row indices of the kept units, each `width` rows wide."""
    units = keep.nonzero().flatten()
    return (units[:, None] * width + torch.arange(width)[None, :]).flatten()


def shrink(model: TransformerLM, mask: Mask) -> TransformerLM:
    """The smaller dense LM equal to `model` with `mask` applied (model is not modified)."""
    masked = TransformerLM(model.config).eval()   # eval: the constants below see no dropout
    masked.load_state_dict(model.state_dict())
    zero_pruned(masked, mask)
    config, state = model.config, masked.state_dict()
    layer_heads, layer_ffn, ranks = [], [], dict(config.ranks)
    select: dict[str, tuple[int, torch.Tensor]] = {}   # param -> (dim, kept indices)
    for i, block in enumerate(masked.layers):
        prefix = f"layers.{i}"
        heads = 0
        if block.attention is not None:
            att, d = block.attention, block.attention.head_dim
            heads = att.heads
            if all(isinstance(getattr(att, p), nn.Linear) for p in ("q", "k", "v", "out")):
                pieces = [(f"{prefix}.attention.{p}.weight", 0, d) for p in "qkv"]
                pieces.append((f"{prefix}.attention.out.weight", 1, d))
                keep = _kept(mask, pieces, att.heads)
                heads = int(keep.sum())
                rows = _indices(keep, d)
                for p in "qkv":
                    _select_linear(select, f"{prefix}.attention.{p}", getattr(att, p), 0, rows)
                _select_linear(select, f"{prefix}.attention.out", att.out, 1, rows)
        layer_heads.append(heads)
        units = 0
        if block.ffn is not None:
            ffn = block.ffn
            units = ffn.up.out_features
            if isinstance(ffn.up, nn.Linear) and isinstance(ffn.down, nn.Linear):
                keep = _kept(mask, [(f"{prefix}.ffn.up.weight", 0, 1),
                                    (f"{prefix}.ffn.down.weight", 1, 1)], ffn.up.out_features)
                units = int(keep.sum())
                rows = _indices(keep)
                _select_linear(select, f"{prefix}.ffn.up", ffn.up, 0, rows)
                _select_linear(select, f"{prefix}.ffn.down", ffn.down, 1, rows)
        layer_ffn.append(units)
        for name, module in block.named_modules():
            if isinstance(module, LowRankLinear):
                path = f"{prefix}.{name}"
                keep = _kept(mask, [(f"{path}.first.weight", 0, 1),
                                    (f"{path}.second.weight", 1, 1)], module.rank)
                ranks[path] = int(keep.sum())
                select[f"{path}.first.weight"] = (0, _indices(keep))
                select[f"{path}.second.weight"] = (1, _indices(keep))
    folded = _constant_ffns(masked, layer_heads, ranks)
    for i in folded:
        layer_ffn[i] = 0
        for linear in ("up", "down"):
            ranks.pop(f"layers.{i}.ffn.{linear}", None)
    new_config = dataclasses.replace(config, layer_heads=layer_heads, layer_ffn=layer_ffn,
                                     ranks=ranks)
    out = TransformerLM(new_config)
    new_state = {}
    for name in out.state_dict():
        value = state[name]
        if name in select:
            dim, index = select[name]
            value = value.index_select(dim, index)
        new_state[name] = value
    for i, constant in folded.items():
        bias = (f"layers.{i}.attention.out.bias" if f"layers.{i}.attention.out.bias" in new_state
                else f"layers.{i}.attention.out.second.bias")
        new_state[bias] = new_state[bias] + constant
    out.load_state_dict(new_state)
    return out.to(model.output.weight.device).train(model.training)


def _select_linear(select: dict, path: str, module: nn.Linear, dim: int,
                   rows: torch.Tensor) -> None:
    """Record the kept rows (dim 0: outputs, with the bias) or columns (dim 1: inputs) of a
    dense Linear."""
    select[f"{path}.weight"] = (dim, rows)
    if dim == 0 and module.bias is not None:
        select[f"{path}.bias"] = (0, rows)


def _constant_ffns(masked: TransformerLM, layer_heads: list[int], ranks: dict[str, int]
                   ) -> dict[int, torch.Tensor]:
    """Blocks whose feed-forward sublayer has a factor of rank 0 -> its constant output [D].

    Such a sublayer ignores its input (up of rank 0 outputs its bias, down of rank 0 too), so
    it only adds a constant after the attention sublayer: folded into the attention's output
    bias, the sublayer is dropped with the block computing the same (blocks without
    attention keep it)."""
    folded = {}
    for i, block in enumerate(masked.layers):
        if block.ffn is None or layer_heads[i] == 0:
            continue
        if any(ranks.get(f"layers.{i}.ffn.{linear}", 1) == 0 for linear in ("up", "down")):
            with torch.no_grad():
                zero = torch.zeros(1, 1, masked.config.d_model,
                                   device=masked.output.weight.device)
                folded[i] = block.ffn(block.ffn_norm(zero)).reshape(-1).detach()
    return folded
