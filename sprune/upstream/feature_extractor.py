"""The convolutional feature encoder (waveform -> frames) and the feature projection.

`group_norm` mode (Base models) normalises each channel of the first conv layer over time
(GroupNorm with one group per channel); `layer_norm` mode (Large models) normalises every
conv layer's output over channels, frame by frame. Each conv block ends with GELU.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

CONV_NORM_EPS = 1e-5  # fixed in every reference (not the transformer's layer_norm_eps)


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of a [B, C, T] tensor."""

    def forward(self, x: Tensor) -> Tensor:
        x = F.layer_norm(x.transpose(1, 2), self.normalized_shape, self.weight, self.bias,
                         self.eps)
        return x.transpose(1, 2)


class ConvBlock(nn.Module):
    """Conv1d -> optional norm -> GELU: [B, C_in, T] -> [B, C_out, T']."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int,
                 bias: bool, norm: str | None) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, stride=stride, bias=bias)
        self.norm: nn.Module | None
        if norm == "group":
            self.norm = nn.GroupNorm(out_channels, out_channels, eps=CONV_NORM_EPS, affine=True)
        elif norm == "layer":
            self.norm = ChannelLayerNorm(out_channels, eps=CONV_NORM_EPS)
        else:
            self.norm = None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm is not None:
            x = self.norm(x)
        return F.gelu(x)


class ConvFeatureExtractor(nn.Module):
    """Waveforms [B, T] -> features [B, T', C] through the conv stack."""

    def __init__(self, conv_layers: list[tuple[int, int, int]], mode: str, bias: bool) -> None:
        super().__init__()
        blocks = []
        in_channels = 1
        for i, (channels, kernel, stride) in enumerate(conv_layers):
            norm = "layer" if mode == "layer_norm" else ("group" if i == 0 else None)
            blocks.append(ConvBlock(in_channels, channels, kernel, stride, bias, norm))
            in_channels = channels
        self.conv_layers = nn.ModuleList(blocks)
        self.kernels_strides = [(kernel, stride) for _, kernel, stride in conv_layers]

    def forward(self, wavs: Tensor) -> Tensor:
        x = wavs.unsqueeze(1)
        for block in self.conv_layers:
            x = block(x)
        return x.transpose(1, 2)

    def output_lengths(self, lengths: Tensor) -> Tensor:
        """Valid frames for `lengths` valid samples: [B] -> [B] (only whole windows count)."""
        for kernel, stride in self.kernels_strides:
            lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
            lengths = lengths.clamp(min=0)
        return lengths


class FeatureProjection(nn.Module):
    """[B, T', C] -> [B, T', D]: optional LayerNorm over C, Linear, dropout."""

    def __init__(self, in_features: int, embed_dim: int, layer_norm: bool, eps: float,
                 dropout: float) -> None:
        super().__init__()
        self.layer_norm = nn.LayerNorm(in_features, eps=eps) if layer_norm else None
        self.projection = nn.Linear(in_features, embed_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, features: Tensor) -> Tensor:
        if self.layer_norm is not None:
            features = self.layer_norm(features)
        return self.dropout(self.projection(features))
