"""Sparsity control for structured L0 pruning: the expected parameter count, the target
ramp and the Lagrangian term of paper 004, Eq. 5.

`parameter_count(config, values)` counts, exactly, the parameters of the model that
`shrink_from_masks` builds from 0/1 gate values (q/k/v/out weights and biases per kept
head dim, WavLM's gate parameters, FFN in/out weights and biases, conv kernels, biases and
norms, the norms and output biases that go with a removed block). The formula is
multilinear in the gates, so fed with P(z != 0) instead of 0/1 it is the expected count
under independent gates, and differentiable.

Sparsity is measured over the prunable scope: the attention and FFN blocks of the
transformer layers (paper 004: 80 % of them takes WavLM Base from 94.7 M to 26.6 M
parameters), plus the conv feature extractor and the feature projection's input side when
conv channels are gated. p_hat = 1 - expected scope count / dense scope count.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import Tensor, nn

from sprune.errors import UserError
from sprune.structured.structures import (GateValues, Structures, gate_shapes, gate_value,
                                          resolve_hierarchy)
from sprune.upstream.config import UpstreamConfig

TARGET_RAMP_RATIO = 0.07  # paper 004: the target rises linearly over the first 7 % of steps


@dataclass
class ParameterCount:
    """Parameters by part: `fixed` never changes; the others depend on the gates."""

    fixed: float
    conv: Tensor
    attention: Tensor
    ffn: Tensor

    @property
    def total(self) -> Tensor:
        return self.fixed + self.conv + self.attention + self.ffn


def parameter_count(config: UpstreamConfig, values: Mapping[str, Tensor]) -> ParameterCount:
    """The parameter count for gate values (0/1 masks or probabilities); missing gates = 1.

    `values` must satisfy `resolve_hierarchy` for 0/1 masks to give the shrunk model's exact
    count; probabilities need no resolving (the formula takes expectations itself).
    """
    # Float64: a float32 sum of ~1e8 parameters is off by a few.
    values = {name: value.double() for name, value in values.items()}
    like = next(iter(values.values()), torch.zeros((), dtype=torch.float64))
    zero = like.new_zeros(())
    dim = config.embed_dim
    pre_ln = config.layer_norm_first
    gated = config.gated_relative_position

    fixed = float(dim)                                                    # projection bias
    kernel, groups = config.pos_conv_kernel, config.pos_conv_groups
    fixed += dim * (dim // groups) * kernel + kernel + dim                # positional conv
    fixed += 2 * dim                                                      # encoder LayerNorm
    fixed += config.relative_position_buckets * config.num_heads          # WavLM bias table
    if not pre_ln:
        fixed += 4 * dim * config.num_layers                              # post-LN norms

    conv = zero
    previous: Tensor | float = 1.0
    for j, (channels, conv_kernel, _) in enumerate(config.conv_layers):
        kept = gate_value(values, f"conv.{j}", (channels,), like).sum()
        conv = conv + kernel_params(previous, kept, conv_kernel)
        if config.conv_bias:
            conv = conv + kept
        if config.extractor_mode == "layer_norm" or j == 0:
            conv = conv + 2 * kept                                        # conv norm affine
        previous = kept
    if config.feature_projection_layer_norm:
        conv = conv + 2 * previous
    conv = conv + previous * dim                                          # projection weight

    attention, ffn = zero, zero
    for i, layer in enumerate(config.layers):
        p = f"layers.{i}"
        if layer.has_attention:
            attention = attention + _attention_count(config, layer, p, values, like, pre_ln,
                                                     gated)
        if layer.has_ffn:
            block = gate_value(values, f"{p}.ffn", (1,), like).reshape(())
            units = gate_value(values, f"{p}.ffn_units", (layer.ffn_dim,), like)
            alive = 1.0 - torch.prod(1.0 - units)
            ffn = ffn + block * ((2 * dim + 1) * units.sum()
                                 + alive * (dim + (2 * dim if pre_ln else 0)))
    return ParameterCount(fixed=fixed, conv=conv, attention=attention, ffn=ffn)


def kernel_params(in_channels: Tensor | float, out_channels: Tensor, kernel: int) -> Tensor:
    return in_channels * out_channels * kernel


def _attention_count(config: UpstreamConfig, layer, prefix: str, values: Mapping[str, Tensor],
                     like: Tensor, pre_ln: bool, gated: bool) -> Tensor:
    dim, heads = config.embed_dim, layer.num_heads
    block = gate_value(values, f"{prefix}.attention", (1,), like).reshape(())
    head = gate_value(values, f"{prefix}.heads", (heads,), like)
    if f"{prefix}.qk" in values:
        qk = values[f"{prefix}.qk"].sum(dim=1)
    else:
        qk = _sizes(tuple(layer.qk_dims), like)
    if f"{prefix}.vo" in values:
        vo_gates = values[f"{prefix}.vo"]
        vo = vo_gates.sum(dim=1)
        any_vo = 1.0 - torch.prod(1.0 - vo_gates, dim=1)   # P(the head keeps a value dim)
    else:
        vo = _sizes(tuple(layer.vo_dims), like)
        any_vo = (vo > 0).to(vo.dtype)
    per_head = (2 * (dim + 1) * qk * any_vo            # q, k rows and biases
                + (2 * dim + 1) * vo                   # v rows, biases, out_proj columns
                + (any_vo if gated else 0.0))          # WavLM gate.const entry
    alive = head * any_vo
    block_alive = 1.0 - torch.prod(1.0 - alive)
    per_block = dim + (8 * config.head_dim + 8 if gated else 0) + (2 * dim if pre_ln else 0)
    return block * ((head * per_head).sum() + block_alive * per_block)


@functools.lru_cache(maxsize=256)
def _size_tensor(sizes: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> Tensor:
    return torch.tensor([float(d) for d in sizes], dtype=dtype).to(device)


def _sizes(sizes: tuple[int, ...], like: Tensor) -> Tensor:
    """Head sizes as a tensor like `like`: a fill where they are equal, else a copy made once
    per device (a tensor from Python values is a blocking copy to a GPU: a host sync)."""
    if len(set(sizes)) == 1:
        return like.new_full((len(sizes),), float(sizes[0]))
    return _size_tensor(sizes, like.device, like.dtype)


class ParameterBudget:
    """Dense and expected sizes of the prunable scope for one upstream and structure set."""

    def __init__(self, config: UpstreamConfig, structures: Structures) -> None:
        self.config = config
        self.structures = structures
        self.shapes = gate_shapes(config, structures)
        self.include_conv = structures.conv_channels
        dense = parameter_count(config, {})
        self.dense_total = float(dense.total)
        self.dense_scope = float(self.scope(dense))

    def scope(self, count: ParameterCount) -> Tensor:
        part = count.attention + count.ffn
        return part + count.conv if self.include_conv else part

    def expected_sparsity(self, probabilities: Mapping[str, Tensor]) -> Tensor:
        """p_hat: 1 - expected scope size / dense scope size, differentiable (float32 scalar)."""
        count = self.scope(parameter_count(self.config, probabilities))
        return (1.0 - count / self.dense_scope).float()

    def sparsity_of(self, masks: Mapping[str, Tensor]) -> float:
        """Sparsity of the model 0/1 `masks` shrink to."""
        resolved = resolve_hierarchy(self.config, masks)
        return float(1.0 - self.scope(parameter_count(self.config, resolved)) / self.dense_scope)

    def smallest_masks(self) -> GateValues:
        """Every gate off, except one channel per gated conv layer (shrinking keeps one)."""
        masks = {}
        for name, shape in self.shapes.items():
            mask = torch.zeros(shape)
            if name.startswith("conv."):
                mask[0] = 1.0
            masks[name] = mask
        return masks

    def largest_reachable(self) -> float:
        return self.sparsity_of(self.smallest_masks())

    def check_target(self, target: float, where: str = "target_sparsity") -> None:
        """UserError when `target` is outside [0, 1) or beyond what the gates can remove."""
        if not 0.0 <= target < 1.0:
            raise UserError(f"{where}: {target} is not a sparsity; use a fraction in [0, 1)")
        reachable = self.largest_reachable()
        if target > reachable:
            raise UserError(
                f"{where}: {target:g} cannot be reached with structures "
                f"[{', '.join(self.structures.enabled())}]: the largest reachable sparsity is "
                f"{reachable:.4f}; lower the target or switch on more structures")


def target_sparsity_at(step: int | Tensor, total_steps: int, target: float,
                       ramp_ratio: float = TARGET_RAMP_RATIO) -> float | Tensor:
    """The target after `step` updates: linear from 0 over the first `ramp_ratio` of
    `total_steps`, then held at `target`. A `step` tensor (a 0-dim integer counter on the
    training device) gives a float64 tensor there, computed without reading the counter
    (no host sync), equal to the float for the same step."""
    ramp = ramp_ratio * total_steps
    if isinstance(step, Tensor):
        if ramp <= 0:
            return torch.full((), target, dtype=torch.float64, device=step.device)
        steps = step.double()
        return torch.where(steps >= ramp, target, steps * target / ramp)
    if ramp <= 0 or step >= ramp:
        return target
    return target * step / ramp


class _ReverseGradient(torch.autograd.Function):
    """Identity forward, negated gradient backward: descent on it is ascent on the input."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return -grad


class LagrangianPenalty(nn.Module):
    """lambda_1 (p_hat - p) + lambda_2 (p_hat - p)^2 (paper 004, Eq. 5; Wang et al. 2020).

    The loss is minimised w.r.t. the model and the gates and MAXIMISED w.r.t. the lambdas:
    their gradient is reversed inside forward, so the one optimizer that descends on
    everything ascends on the lambdas (no negative learning rate, no second optimizer).
    """

    def __init__(self) -> None:
        super().__init__()
        self.lambda_1 = nn.Parameter(torch.zeros(()))
        self.lambda_2 = nn.Parameter(torch.zeros(()))

    def forward(self, expected: Tensor, target: float | Tensor) -> Tensor:
        gap = expected - target
        lambda_1 = _ReverseGradient.apply(self.lambda_1)
        lambda_2 = _ReverseGradient.apply(self.lambda_2)
        return lambda_1 * gap + lambda_2 * gap * gap
