"""The transformer encoder: convolutional positional embedding, then post-LN (Base) or pre-LN
(Large, `layer_norm_first`) layers, each with an optional attention block and FFN.

A removed block contributes exactly what its fully masked counterpart would: nothing. In a
post-LN layer the LayerNorm after the residual stays (it still normalises the residual).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sprune.hostsync import host_read
from sprune.upstream.attention import SelfAttention, relative_position_buckets
from sprune.upstream.config import EncoderLayerConfig, UpstreamConfig


class PositionalConv(nn.Module):
    """Grouped conv over time with weight norm (over all but the kernel axis), GELU.

    weight = weight_v * weight_g / ||weight_v||, the norm taken per kernel position;
    weight_g: [K], weight_v: [D, D / groups, K]. An even kernel drops the last output frame
    so the output keeps the input length.
    """

    def __init__(self, embed_dim: int, kernel: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.padding = kernel // 2
        self.trim = 1 if kernel % 2 == 0 else 0
        conv = nn.Conv1d(embed_dim, embed_dim, kernel, padding=self.padding, groups=groups)
        self.weight_v = nn.Parameter(conv.weight.detach().clone())
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(self.weight_v.detach(),
                                                              dim=(0, 1)))
        self.bias = nn.Parameter(conv.bias.detach().clone())

    def weight(self) -> Tensor:
        # The fused kernel behind torch's weight_norm (a plain vector_norm over dims 0 and 1
        # is several times slower on the CPU).
        return torch._weight_norm(self.weight_v, self.weight_g.view(1, 1, -1), 2)

    def forward(self, x: Tensor) -> Tensor:
        """x: [B, T, D] -> [B, T, D]."""
        y = F.conv1d(x.transpose(1, 2), self.weight(), self.bias, padding=self.padding,
                     groups=self.groups)
        if self.trim:
            y = y[..., :-self.trim]
        return F.gelu(y).transpose(1, 2)


class FeedForward(nn.Module):
    """Linear(D, F) -> GELU -> dropout -> Linear(F, D) -> dropout."""

    def __init__(self, embed_dim: int, ffn_dim: int, activation_dropout: float,
                 dropout: float) -> None:
        super().__init__()
        self.intermediate_dense = nn.Linear(embed_dim, ffn_dim)
        self.intermediate_dropout = nn.Dropout(activation_dropout)
        self.output_dense = nn.Linear(ffn_dim, embed_dim)
        self.output_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.intermediate_dropout(F.gelu(self.intermediate_dense(x)))
        return self.output_dropout(self.output_dense(x))


class EncoderLayer(nn.Module):
    """One transformer layer; `attention` / `feed_forward` are None when removed."""

    def __init__(self, config: UpstreamConfig, sizes: EncoderLayerConfig) -> None:
        super().__init__()
        dim, eps = config.embed_dim, config.layer_norm_eps
        self.layer_norm_first = config.layer_norm_first
        self.attention = SelfAttention(
            dim, config.head_dim, sizes.kept_heads, sizes.qk_dims, sizes.vo_dims,
            dropout=config.attention_dropout, original_heads=config.num_heads,
            gated_position_bias=config.gated_relative_position,
        ) if sizes.has_attention else None
        self.dropout = nn.Dropout(config.hidden_dropout)
        # Pre-LN norms exist only with their block; post-LN norms always act on the residual.
        keep_attn_norm = sizes.has_attention or not config.layer_norm_first
        keep_ffn_norm = sizes.has_ffn or not config.layer_norm_first
        self.layer_norm = nn.LayerNorm(dim, eps=eps) if keep_attn_norm else None
        self.feed_forward = FeedForward(dim, sizes.ffn_dim, config.activation_dropout,
                                        config.hidden_dropout) if sizes.has_ffn else None
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps) if keep_ffn_norm else None

    def forward(self, x: Tensor, key_padding_mask: Tensor | None,
                position_bias: Tensor | None) -> Tensor:
        """x: [B, T, D] -> [B, T, D]."""
        if self.layer_norm_first:
            if self.attention is not None:
                x = x + self.dropout(self.attention(self.layer_norm(x), key_padding_mask,
                                                    position_bias))
            if self.feed_forward is not None:
                x = x + self.feed_forward(self.final_layer_norm(x))
            return x
        if self.attention is not None:
            x = x + self.dropout(self.attention(x, key_padding_mask, position_bias))
        x = self.layer_norm(x)
        if self.feed_forward is not None:
            x = x + self.feed_forward(x)
        return self.final_layer_norm(x)


class Encoder(nn.Module):
    """Projected features [B, T, D] -> hidden states: the transformer input and each layer's
    output (the last one after the final LayerNorm in pre-LN models), each [B, T, D]."""

    def __init__(self, config: UpstreamConfig) -> None:
        super().__init__()
        self.layer_norm_first = config.layer_norm_first
        self.layerdrop = config.layerdrop
        self.pos_conv = PositionalConv(config.embed_dim, config.pos_conv_kernel,
                                       config.pos_conv_groups)
        self.layer_norm = nn.LayerNorm(config.embed_dim, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)
        self.rel_attn_embed = (nn.Embedding(config.relative_position_buckets, config.num_heads)
                               if config.has_relative_position else None)
        self.num_buckets = config.relative_position_buckets
        self.max_distance = config.relative_position_max_distance
        self.layers = nn.ModuleList(EncoderLayer(config, sizes) for sizes in config.layers)

    def position_bias(self, frames: int) -> Tensor | None:
        """WavLM's relative position bias for all original heads: [H, T, T] (or None)."""
        if self.rel_attn_embed is None:
            return None
        buckets = relative_position_buckets(frames, frames, self.num_buckets, self.max_distance,
                                            device=self.rel_attn_embed.weight.device)
        return self.rel_attn_embed(buckets).permute(2, 0, 1)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> list[Tensor]:
        """key_padding_mask: [B, T] bool, True = padded frame (zeroed, never attended)."""
        return self.run_layers(self.embed(x, key_padding_mask), key_padding_mask)

    def embed(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        """The layers' input before dropout: projected features plus the positional conv,
        LayerNorm-ed in post-LN models. [B, T, D] -> [B, T, D]."""
        if key_padding_mask is not None:
            x = x.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        return x

    def run_layers(self, x: Tensor, key_padding_mask: Tensor | None = None) -> list[Tensor]:
        """`embed`'s output [B, T, D] through dropout and the layers: the hidden states."""
        x = self.dropout(x)
        position_bias = self.position_bias(x.shape[1])
        hidden_states = [x]
        for layer in self.layers:
            skip = False
            if self.training and self.layerdrop > 0:
                with host_read():   # a draw of the CPU generator: reading it stalls nothing
                    skip = bool(torch.rand(()) < self.layerdrop)
            if not skip:
                x = layer(x, key_padding_mask, position_bias)
            hidden_states.append(x)
        if self.layer_norm_first:
            hidden_states[-1] = self.layer_norm(x)
        return hidden_states
