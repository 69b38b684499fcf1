"""Deterministic 0/1 gates -> `sprune.upstream.shrink.Selection` -> a smaller dense upstream.

The selection keeps, per layer, the heads that survive `resolve_hierarchy` (attention gate,
head gate and at least one value-output dim on), their kept query-key and value-output
dims, and the kept FFN units (none when the FFN gate is off); per gated conv layer its
kept channels. The shrunk model computes what the masked model computes in eval mode.
"""
from __future__ import annotations

from typing import Mapping

from torch import Tensor

from sprune.structured.masked import MaskedUpstream
from sprune.structured.structures import resolve_hierarchy
from sprune.upstream.config import UpstreamConfig
from sprune.upstream.model import UpstreamModel
from sprune.upstream.shrink import LayerSelection, Selection, shrink_upstream


def _kept(mask: Tensor) -> list[int]:
    return [int(i) for i in mask.nonzero().flatten()]


def selection_from_masks(config: UpstreamConfig, masks: Mapping[str, Tensor]) -> Selection:
    """The `Selection` of 0/1 `masks` (gate name -> tensor; missing gates keep everything)."""
    masks = resolve_hierarchy(config, masks)
    layers = []
    for i, layer in enumerate(config.layers):
        p = f"layers.{i}"
        heads: list[int] = []
        qk_dims: list[list[int]] = []
        vo_dims: list[list[int]] = []
        if layer.has_attention and bool(masks[f"{p}.attention"].item()):
            head_mask = masks.get(f"{p}.heads")
            for h in range(layer.num_heads):
                qk = (_kept(masks[f"{p}.qk"][h]) if f"{p}.qk" in masks
                      else list(range(layer.qk_dims[h])))
                vo = (_kept(masks[f"{p}.vo"][h]) if f"{p}.vo" in masks
                      else list(range(layer.vo_dims[h])))
                if (head_mask is not None and not bool(head_mask[h].item())) or not vo:
                    continue
                heads.append(h)
                qk_dims.append(qk)
                vo_dims.append(vo)
        units: list[int] = []
        if layer.has_ffn and bool(masks[f"{p}.ffn"].item()):
            units = (_kept(masks[f"{p}.ffn_units"]) if f"{p}.ffn_units" in masks
                     else list(range(layer.ffn_dim)))
        layers.append(LayerSelection(heads=heads, qk_dims=qk_dims, vo_dims=vo_dims,
                                     ffn_units=units))
    conv_channels = None
    if any(name.startswith("conv.") for name in masks):
        conv_channels = [
            _kept(masks[f"conv.{j}"]) if f"conv.{j}" in masks else list(range(channels))
            for j, (channels, _, _) in enumerate(config.conv_layers)]
    return Selection(layers=layers, conv_channels=conv_channels)


def shrink_masked(masked: MaskedUpstream) -> UpstreamModel:
    """The physically shrunk upstream of `masked`'s deterministic gates (a new model)."""
    selection = selection_from_masks(masked.config, masked.eval_masks())
    return shrink_upstream(masked.upstream, selection)
