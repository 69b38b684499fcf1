"""An upstream whose structures are multiplied by hard-concrete gates (paper 004, Eq. 3).

`MaskedUpstream` wraps an `UpstreamModel` without touching its code: forward hooks scale

    q_proj output            by the qk gates           (query-key dims; zero dims add no score)
    v_proj output            by vo gates * head gates  (value-output dims: W_O loses them too)
    the attention block      by its block gate         (its output bias included)
    output_dense input       by the ffn_units gates    (after GELU, as in Eq. 3)
    the feed-forward block   by its block gate
    conv block j output      by its channel gates      (after the norm and GELU)

Masks are drawn once per forward: sampled gates in training mode, the deterministic 0/1
gates resolved by `resolve_hierarchy` in eval mode (which is what the shrunk model computes).
The wrapped upstream runs unmasked when called directly, outside `MaskedUpstream.forward`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn

from sprune.errors import UserError
from sprune.structured.hard_concrete import BETA
from sprune.structured.structures import (GateValues, StructureGates, Structures,
                                          resolve_hierarchy)
from sprune.upstream.config import UpstreamConfig
from sprune.upstream.model import UpstreamModel, UpstreamOutput


class MaskedUpstream(nn.Module):
    """`upstream` with gates on `structures` (see the module docstring).

    forward(wavs [B, T], lengths [B] or None) -> `UpstreamOutput`, like the upstream.
    """

    def __init__(self, upstream: UpstreamModel, structures: Structures, *, beta: float = BETA,
                 straight_through: bool = True, init_keep_prob: float = 0.9) -> None:
        super().__init__()
        if structures.conv_channels and upstream.feature_encoder_frozen:
            raise UserError("structures: conv_channels gates the conv feature encoder, which is "
                            "frozen here; unfreeze it or switch conv_channels off")
        self.upstream = upstream
        self.gates = StructureGates(upstream.config, structures, beta=beta,
                                    straight_through=straight_through,
                                    init_keep_prob=init_keep_prob)
        self._active: GateValues | None = None
        self._handles = self._register_hooks()

    @property
    def config(self) -> UpstreamConfig:
        return self.upstream.config

    @property
    def structures(self) -> Structures:
        return self.gates.structures

    def eval_masks(self) -> GateValues:
        """The deterministic 0/1 masks the shrunk model keeps (hierarchy resolved)."""
        return resolve_hierarchy(self.config, self.gates.deterministic())

    def current_masks(self) -> GateValues:
        return self.gates.sample() if self.training else self.eval_masks()

    def forward(self, wavs: Tensor, lengths: Tensor | None = None,
                masks: GateValues | None = None) -> UpstreamOutput:
        """Run the upstream under `masks` (default: `current_masks()`)."""
        self._active = self.current_masks() if masks is None else masks
        try:
            return self.upstream(wavs, lengths)
        finally:
            self._active = None

    def remove_hooks(self) -> None:
        """Detach the hooks: the upstream is then a plain (unmasked) model again."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    # -- hooks ---------------------------------------------------------------------------------
    def _mask(self, name: str, like: Tensor) -> Tensor | None:
        if self._active is None or name not in self._active:
            return None
        return self._active[name].to(like.dtype)

    def _scale_output(self, name: str, shape: Callable[[Tensor], Tensor]
                      ) -> Callable[[nn.Module, Any, Tensor], Tensor | None]:
        """A forward hook multiplying the output by mask `name`, reshaped by `shape`."""
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
            mask = self._mask(name, output)
            return None if mask is None else output * shape(mask)
        return hook

    def _register_hooks(self) -> list[torch.utils.hooks.RemovableHandle]:
        handles = []
        model = self.upstream
        for j, block in enumerate(model.feature_extractor.conv_layers):
            handles.append(block.register_forward_hook(
                self._scale_output(f"conv.{j}", _per_channel)))
        for i, layer in enumerate(model.encoder.layers):
            p = f"layers.{i}"
            if layer.attention is not None:
                attention = layer.attention
                handles.append(attention.q_proj.register_forward_hook(
                    self._scale_output(f"{p}.qk", _head_major)))
                handles.append(attention.v_proj.register_forward_hook(
                    self._value_hook(p, model.config.layers[i].vo_dims)))
                handles.append(attention.register_forward_hook(
                    self._scale_output(f"{p}.attention", _as_is)))
            if layer.feed_forward is not None:
                handles.append(layer.feed_forward.output_dense.register_forward_pre_hook(
                    self._units_hook(f"{p}.ffn_units")))
                handles.append(layer.feed_forward.register_forward_hook(
                    self._scale_output(f"{p}.ffn", _as_is)))
        return handles

    def _value_hook(self, prefix: str, vo_dims: list[int]
                    ) -> Callable[[nn.Module, Any, Tensor], Tensor | None]:
        repeats = torch.tensor(vo_dims)
        on_device: dict[torch.device, Tensor] = {}   # copied once per device, not per step

        def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
            vo = self._mask(f"{prefix}.vo", output)
            heads = self._mask(f"{prefix}.heads", output)
            if vo is None and heads is None:
                return None
            if vo is None:  # heads may differ in size here
                if heads.device not in on_device:
                    on_device[heads.device] = repeats.to(heads.device)
                # output_size: repeat_interleave would otherwise sum the repeats on the host
                factor = heads.repeat_interleave(on_device[heads.device],
                                                 output_size=sum(vo_dims))
            else:
                factor = (vo if heads is None else vo * heads[:, None]).reshape(-1)
            return output * factor
        return hook

    def _units_hook(self, name: str) -> Callable[[nn.Module, tuple[Tensor, ...]], Any]:
        def hook(module: nn.Module, inputs: tuple[Tensor, ...]) -> Any:
            mask = self._mask(name, inputs[0])
            return None if mask is None else (inputs[0] * mask,)
        return hook


def _per_channel(mask: Tensor) -> Tensor:
    """[C] -> [1, C, 1] for conv outputs [B, C, T]."""
    return mask.view(1, -1, 1)


def _head_major(mask: Tensor) -> Tensor:
    """[H, d] -> [H * d], the row layout of q_proj / v_proj (head h owns rows h*d..)."""
    return mask.reshape(-1)


def _as_is(mask: Tensor) -> Tensor:
    return mask
