"""Which structures of an upstream get hard-concrete gates, and the gates themselves.

Gates are named like the structure they remove (a layer index i, a conv layer j):

    layers.{i}.qk           [H, d_qk]  query-key dims of each head (fine-grained, Eq. 3)
    layers.{i}.vo           [H, d_vo]  value-output dims of each head (W_O columns with them)
    layers.{i}.heads        [H]        whole heads
    layers.{i}.attention    [1]        the whole attention block (z_MHA)
    layers.{i}.ffn_units    [F]        FFN intermediate units (z_int)
    layers.{i}.ffn          [1]        the whole FFN block (z_FFN)
    conv.{j}                [C_j]      output channels of conv layer j (off by default)

A structure that is switched off has no gates; readers of gate values (`gate_value`) treat
a missing gate as all ones. Gate values travel as a plain `dict[str, Tensor]` (sampled
masks, probabilities P(z != 0) or deterministic 0/1 masks), so the same dict feeds the
masked forward, the parameter count and the shrinking.

Conv channels are only gated where removing them is exact: group-norm extractors, and not
the last conv layer when the feature projection normalises over its channels (LayerNorm
statistics would change). The last layer is gated when `feature_projection_layer_norm` is off.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from sprune.errors import UserError
from sprune.structured.hard_concrete import BETA, HardConcrete
from sprune.upstream.config import UpstreamConfig

GateValues = dict[str, Tensor]


@dataclass
class Structures:
    """Switches for the gated structures (the `structures:` mapping of the pruning YAML).

    The defaults are paper 004's Eq. 3 (a head goes when all its value-output dims go);
    its "w/o FAHP" baseline gates whole heads instead of qk / vo dims (CoFi's head gates).
    """

    qk_dims: bool = True           # per-head query-key dimensions (paper 004, Eq. 3)
    vo_dims: bool = True           # per-head value-output dimensions, W_O pruned with them
    heads: bool = False            # whole attention heads (not in paper 004's Eq. 3)
    attention_layers: bool = True  # whole attention blocks (z_MHA)
    ffn_units: bool = True         # FFN intermediate units (z_int)
    ffn_layers: bool = True        # whole FFN blocks (z_FFN)
    conv_channels: bool = False    # conv feature-extractor channels (off in paper 004)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def enabled(self) -> list[str]:
        return [name for name in self.names() if getattr(self, name)]

    @classmethod
    def parse(cls, value: Any, where: str = "structures") -> "Structures":
        """From a mapping {name: true/false} (unnamed ones keep their defaults) or a list of
        the names to switch on (all others off). Unknown names are a `UserError`."""
        known = cls.names()
        if isinstance(value, cls):
            return value
        if isinstance(value, (list, tuple)):
            chosen = {str(name): True for name in value}
            unknown = [name for name in chosen if name not in known]
            mapping: dict[str, Any] = {name: name in chosen for name in known}
        elif isinstance(value, Mapping):
            unknown = [str(name) for name in value if name not in known]
            mapping = dict(value)
        else:
            raise UserError(f"{where}: expected a mapping of structure names to true/false or "
                            f"a list of structure names; known structures: {', '.join(known)}")
        if unknown:
            raise UserError(f"{where}: unknown structure '{unknown[0]}'; known structures: "
                            f"{', '.join(known)}")
        for name, flag in mapping.items():
            if not isinstance(flag, bool):
                raise UserError(f"{where}.{name}: expected true or false, got {flag!r}")
        return cls(**mapping)


def gate_value(values: Mapping[str, Tensor], name: str, shape: tuple[int, ...],
               like: Tensor | None = None) -> Tensor:
    """The gate tensor `name`, or ones of `shape` when that structure is not gated."""
    found = values.get(name)
    if found is not None:
        return found
    device = like.device if like is not None else None
    dtype = like.dtype if like is not None else torch.float32
    return torch.ones(shape, device=device, dtype=dtype)


def gated_conv_layers(config: UpstreamConfig) -> list[int]:
    """Conv layers whose output channels can be removed exactly (see the module docstring)."""
    last = len(config.conv_layers) - 1
    return [j for j in range(len(config.conv_layers))
            if j < last or not config.feature_projection_layer_norm]


def gate_shapes(config: UpstreamConfig, structures: Structures,
                where: str = "structures") -> dict[str, tuple[int, ...]]:
    """Name -> shape of every gate `structures` asks for on a model of `config`."""
    if not structures.enabled():
        raise UserError(f"{where}: no structure is switched on; enable at least one of "
                        f"{', '.join(Structures.names())}")
    shapes: dict[str, tuple[int, ...]] = {}
    if structures.conv_channels:
        if config.extractor_mode != "group_norm":
            raise UserError(f"{where}: conv_channels needs a group-norm feature extractor (its "
                            f"LayerNorms over channels make channel removal inexact); this "
                            f"upstream's extractor_mode is '{config.extractor_mode}': switch "
                            "conv_channels off")
        for j in gated_conv_layers(config):
            shapes[f"conv.{j}"] = (config.conv_layers[j][0],)
    for i, layer in enumerate(config.layers):
        if layer.has_attention:
            heads = layer.num_heads
            for name, dims, on in (("qk", layer.qk_dims, structures.qk_dims),
                                   ("vo", layer.vo_dims, structures.vo_dims)):
                if not on:
                    continue
                if len(set(dims)) != 1 or dims[0] == 0:
                    raise UserError(f"{where}: layer {i} has heads of unequal {name} sizes "
                                    f"{dims} (an upstream shrunk per dimension); {name}_dims "
                                    "gates need equal, non-zero head sizes: switch them off")
                shapes[f"layers.{i}.{name}"] = (heads, dims[0])
            if structures.heads:
                shapes[f"layers.{i}.heads"] = (heads,)
            if structures.attention_layers:
                shapes[f"layers.{i}.attention"] = (1,)
        if layer.has_ffn:
            if structures.ffn_units:
                shapes[f"layers.{i}.ffn_units"] = (layer.ffn_dim,)
            if structures.ffn_layers:
                shapes[f"layers.{i}.ffn"] = (1,)
    if not shapes:
        raise UserError(f"{where}: [{', '.join(structures.enabled())}] find nothing to gate "
                        "in this upstream (its blocks are already removed); switch on others")
    return shapes


class StructureGates(nn.Module):
    """The hard-concrete gates of one upstream (names and shapes from `gate_shapes`)."""

    def __init__(self, config: UpstreamConfig, structures: Structures, *, beta: float = BETA,
                 straight_through: bool = True, init_keep_prob: float = 0.9) -> None:
        super().__init__()
        self.config = config
        self.structures = structures
        self.shapes = gate_shapes(config, structures)
        # ModuleDict keys cannot hold dots; the public names keep them.
        self.gates = nn.ModuleDict({
            _key(name): HardConcrete(shape, beta=beta, straight_through=straight_through,
                                     init_keep_prob=init_keep_prob,
                                     min_keep=1 if name.startswith("conv.") else 0)
            for name, shape in self.shapes.items()})

    def names(self) -> list[str]:
        return list(self.shapes)

    def gate(self, name: str) -> HardConcrete:
        return self.gates[_key(name)]

    def sample(self) -> GateValues:
        """One sampled mask per gate (training)."""
        return {name: self.gate(name).sample() for name in self.shapes}

    def probabilities(self) -> GateValues:
        """P(z != 0) per gate, differentiable."""
        return {name: self.gate(name).prob_nonzero() for name in self.shapes}

    def deterministic(self) -> GateValues:
        """Raw 0/1 gates (before `resolve_hierarchy`)."""
        return {name: self.gate(name).deterministic() for name in self.shapes}

    def log_alphas(self) -> GateValues:
        return {name: self.gate(name).log_alpha for name in self.shapes}


def _key(name: str) -> str:
    return name.replace(".", "_")


@torch.no_grad()
def resolve_hierarchy(config: UpstreamConfig, masks: Mapping[str, Tensor]) -> GateValues:
    """Make 0/1 masks consistent with what a shrunk model can hold; returns a new dict.

    A head survives when its layer's attention gate, its head gate and at least one of its
    value-output dims are on (a head without value dims adds nothing). An attention block
    survives when one of its heads does, an FFN block when one of its units does. Gates of
    removed structures are zeroed, and the result always holds a block gate
    `layers.{i}.attention` / `layers.{i}.ffn` for every block of the model, even where that
    structure is not gated: a block whose heads or units are all gone must also lose its
    output bias, exactly as the shrunk model, which has no such block, does.
    """
    like = next(iter(masks.values()), None)
    out: GateValues = {name: value.clone() for name, value in masks.items()}
    for i, layer in enumerate(config.layers):
        p = f"layers.{i}"
        if layer.has_attention:
            heads = layer.num_heads
            attention = gate_value(masks, f"{p}.attention", (1,), like)
            head = gate_value(masks, f"{p}.heads", (heads,), like)
            vo = gate_value(masks, f"{p}.vo", (heads, 1), like)
            alive = attention * head * (vo.amax(dim=1) > 0).to(head.dtype)
            out[f"{p}.attention"] = (alive.amax() > 0).to(head.dtype).reshape(1)
            if f"{p}.heads" in out:
                out[f"{p}.heads"] = alive
            for name in (f"{p}.qk", f"{p}.vo"):
                if name in out:
                    out[name] = out[name] * alive[:, None]
        if layer.has_ffn:
            ffn = gate_value(masks, f"{p}.ffn", (1,), like)
            units = gate_value(masks, f"{p}.ffn_units", (layer.ffn_dim,), like) * ffn
            out[f"{p}.ffn"] = (units.amax() > 0).to(units.dtype).reshape(1)
            if f"{p}.ffn_units" in out:
                out[f"{p}.ffn_units"] = units
    return out
