"""Physical shrinking: keep a subset of heads, head dimensions, FFN units and conv channels,
and build the smaller dense model of the same code with smaller sizes in its config.

The shrunk model computes what the original computes with the dropped structure masked:
q/k rows (and biases) of dropped query-key dims, v rows and `out_proj` columns of dropped
value-output dims, whole dropped heads, FFN units, and a whole attention block or FFN when
nothing of it is kept (its output bias included). Dropped conv channels equal zeroing the
next conv layer's input weights for them; that stays exact while the next layer has no
LayerNorm over channels (group-norm extractors, all but the last conv layer).

Turning trained masks into a `Selection` is the pruning method's job; this module only
knows where each structure lives in the weights (see `attention.py` for the head layout).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from itertools import accumulate

import torch
from torch import Tensor

from sprune.upstream.config import EncoderLayerConfig, UpstreamConfig
from sprune.upstream.model import UpstreamModel


@dataclass
class LayerSelection:
    """What one transformer layer keeps, as positions in its CURRENT structure.

    heads: kept head positions (0 .. current heads - 1); qk_dims / vo_dims: per kept head,
    the kept dims within that head's current query-key / value-output dims; ffn_units: kept
    intermediate units. An empty `heads` removes attention, an empty `ffn_units` the FFN.
    """

    heads: list[int]
    qk_dims: list[list[int]]
    vo_dims: list[list[int]]
    ffn_units: list[int]


@dataclass
class Selection:
    """Per-layer selections, plus kept output channels per conv layer (None = keep all)."""

    layers: list[LayerSelection]
    conv_channels: list[list[int]] | None = field(default=None)


def keep_everything(config: UpstreamConfig) -> Selection:
    """The selection that keeps the whole model (a starting point to edit)."""
    return Selection(layers=[
        LayerSelection(heads=list(range(layer.num_heads)),
                       qk_dims=[list(range(d)) for d in layer.qk_dims],
                       vo_dims=[list(range(d)) for d in layer.vo_dims],
                       ffn_units=list(range(layer.ffn_dim)))
        for layer in config.layers])


def shrunk_config(config: UpstreamConfig, selection: Selection) -> UpstreamConfig:
    """The config of the shrunk model: same architecture, the selected sizes."""
    _check(config, selection)
    new = copy.deepcopy(config)
    new.layers = [
        EncoderLayerConfig(kept_heads=[layer.kept_heads[p] for p in sel.heads],
                           qk_dims=[len(d) for d in sel.qk_dims],
                           vo_dims=[len(d) for d in sel.vo_dims],
                           ffn_dim=len(sel.ffn_units))
        for layer, sel in zip(config.layers, selection.layers)]
    if selection.conv_channels is not None:
        new.conv_layers = [(len(keep), kernel, stride) for keep, (_, kernel, stride)
                           in zip(selection.conv_channels, config.conv_layers)]
    return new.validate()


def shrink_upstream(model: UpstreamModel, selection: Selection) -> UpstreamModel:
    """A new, smaller `UpstreamModel` holding the selected weights (see module docstring)."""
    config = model.config
    new_config = shrunk_config(config, selection)
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    if selection.conv_channels is not None:
        _select_conv_channels(state, config, selection.conv_channels)
    for i, (layer, sel) in enumerate(zip(config.layers, selection.layers)):
        _select_layer(state, f"encoder.layers.{i}", layer, sel)
    shrunk = UpstreamModel(new_config, freeze_feature_encoder=model.feature_encoder_frozen)
    expected = shrunk.state_dict()
    shrunk.load_state_dict({name: state[name] for name in expected})
    shrunk.train(model.training)
    return shrunk.to(next(model.parameters()).device)


def _check(config: UpstreamConfig, selection: Selection) -> None:
    if len(selection.layers) != config.num_layers:
        raise ValueError(f"selection has {len(selection.layers)} layers, the model "
                         f"{config.num_layers}")
    for i, (layer, sel) in enumerate(zip(config.layers, selection.layers)):
        if sorted(set(sel.heads)) != sel.heads or any(h >= layer.num_heads for h in sel.heads):
            raise ValueError(f"layer {i}: heads {sel.heads} must be sorted, distinct positions "
                             f"below {layer.num_heads}")
        for name, sizes in (("qk_dims", layer.qk_dims), ("vo_dims", layer.vo_dims)):
            dims = getattr(sel, name)
            if len(dims) != len(sel.heads):
                raise ValueError(f"layer {i}: {name} needs one list per kept head")
            for head, kept in zip(sel.heads, dims):
                if sorted(set(kept)) != kept or any(d >= sizes[head] for d in kept):
                    raise ValueError(f"layer {i}: {name} {kept} of head {head} must be sorted, "
                                     f"distinct and below {sizes[head]}")
        if sorted(set(sel.ffn_units)) != sel.ffn_units or any(
                u >= layer.ffn_dim for u in sel.ffn_units):
            raise ValueError(f"layer {i}: ffn_units must be sorted, distinct, below "
                             f"{layer.ffn_dim}")
    if selection.conv_channels is not None:
        if len(selection.conv_channels) != len(config.conv_layers):
            raise ValueError("conv_channels needs one list per conv layer")
        for i, (kept, (channels, _, _)) in enumerate(zip(selection.conv_channels,
                                                          config.conv_layers)):
            if not kept or sorted(set(kept)) != kept or kept[-1] >= channels:
                raise ValueError(f"conv layer {i}: channels {kept[:5]}... must be a non-empty, "
                                 f"sorted, distinct subset of range({channels})")


def _rows(sizes: list[int], heads: list[int], dims: list[list[int]]) -> Tensor:
    offsets = [0] + list(accumulate(sizes))
    return torch.tensor([offsets[h] + d for h, kept in zip(heads, dims) for d in kept],
                        dtype=torch.long)


def _select_layer(state: dict[str, Tensor], prefix: str, layer: EncoderLayerConfig,
                  sel: LayerSelection) -> None:
    attn = f"{prefix}.attention"
    if layer.has_attention and sel.heads:
        qk = _rows(layer.qk_dims, sel.heads, sel.qk_dims)
        vo = _rows(layer.vo_dims, sel.heads, sel.vo_dims)
        for proj, rows in (("q_proj", qk), ("k_proj", qk), ("v_proj", vo)):
            for part in ("weight", "bias"):
                state[f"{attn}.{proj}.{part}"] = state[f"{attn}.{proj}.{part}"][rows]
        state[f"{attn}.out_proj.weight"] = state[f"{attn}.out_proj.weight"][:, vo]
        if f"{attn}.gate.const" in state:
            state[f"{attn}.gate.const"] = state[f"{attn}.gate.const"][sel.heads]
    ffn = f"{prefix}.feed_forward"
    if layer.has_ffn and sel.ffn_units:
        units = torch.tensor(sel.ffn_units, dtype=torch.long)
        for part in ("weight", "bias"):
            key = f"{ffn}.intermediate_dense.{part}"
            state[key] = state[key][units]
        state[f"{ffn}.output_dense.weight"] = state[f"{ffn}.output_dense.weight"][:, units]


def _select_conv_channels(state: dict[str, Tensor], config: UpstreamConfig,
                          channels: list[list[int]]) -> None:
    previous: Tensor | None = None
    for i, kept in enumerate(channels):
        rows = torch.tensor(kept, dtype=torch.long)
        prefix = f"feature_extractor.conv_layers.{i}"
        weight = state[f"{prefix}.conv.weight"][rows]
        state[f"{prefix}.conv.weight"] = weight if previous is None else weight[:, previous]
        for key in (f"{prefix}.conv.bias", f"{prefix}.norm.weight", f"{prefix}.norm.bias"):
            if key in state:
                state[key] = state[key][rows]
        previous = rows
    for key in ("feature_projection.layer_norm.weight", "feature_projection.layer_norm.bias"):
        if key in state:
            state[key] = state[key][previous]
    state["feature_projection.projection.weight"] = (
        state["feature_projection.projection.weight"][:, previous])
