"""Building blocks of the LM: (factorized) linear layers, cached causal self-attention and the
feed-forward sublayer. Sizes may differ per block (a shrunk model keeps what pruning left).

Shapes: B batch, T new positions, S cached positions, D d_model, H heads kept, d head size,
F feed-forward units kept, r rank of a factorized layer.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn


class LowRankLinear(nn.Module):
    """y = U (V x) + b with V = `first.weight` [r, in] and U = `second.weight` [out, r].

    A rank component k is row k of V with column k of U: the unit that rank pruning scores
    and removes (paper 002's factorized layers; `sprune.lm.structure` names these units).
    """

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True) -> None:
        super().__init__()
        with warnings.catch_warnings():   # rank 0 (all components pruned) has empty factors
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            self.first = nn.Linear(in_features, rank, bias=False)
            self.second = nn.Linear(rank, out_features, bias=bias)

    @property
    def rank(self) -> int:
        return self.first.out_features

    @property
    def in_features(self) -> int:
        return self.first.in_features

    @property
    def out_features(self) -> int:
        return self.second.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> "LowRankLinear":
        """The rank-`rank` truncated SVD of `linear`: W = A S B^T ~ (A_r S_r^1/2)(S_r^1/2 B_r^T).

        The singular values are split evenly between the two factors (the usual balanced
        choice), so U and V have comparable scales for magnitude-based rank scoring. At full
        rank (min(in, out)) the product reproduces W up to float rounding.
        """
        weight = linear.weight.detach().double()
        full = min(weight.shape)
        if not 1 <= rank <= full:
            raise ValueError(f"rank {rank} outside [1, {full}]")
        left, singular, right_t = torch.linalg.svd(weight, full_matrices=False)
        root = singular[:rank].sqrt()
        layer = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
        dtype = linear.weight.dtype
        with torch.no_grad():
            layer.first.weight.copy_((root[:, None] * right_t[:rank]).to(dtype))
            layer.second.weight.copy_((left[:, :rank] * root[None, :]).to(dtype))
            if linear.bias is not None:
                layer.second.bias.copy_(linear.bias.detach())
        return layer.to(linear.weight.device)


def make_linear(in_features: int, out_features: int, rank: int | None) -> nn.Module:
    """A dense `nn.Linear`, or a `LowRankLinear` of `rank` when given."""
    if rank is None:
        return nn.Linear(in_features, out_features)
    return LowRankLinear(in_features, out_features, rank)


def neutral_rank(in_features: int, out_features: int) -> int:
    """The largest rank whose factors hold no more weights than the dense matrix:
    r (in + out) <= in * out."""
    return max(1, (in_features * out_features) // (in_features + out_features))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with `heads` heads of size `head_dim` (ESPnet's
    MultiHeadedAttention: softmax(q k^T / sqrt(d)) v, then the output projection)."""

    def __init__(self, d_model: int, heads: int, head_dim: int, dropout: float,
                 ranks: dict[str, int] | None = None) -> None:
        super().__init__()
        ranks = ranks or {}
        inner = heads * head_dim
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        self.q = make_linear(d_model, inner, ranks.get("q"))
        self.k = make_linear(d_model, inner, ranks.get("k"))
        self.v = make_linear(d_model, inner, ranks.get("v"))
        self.out = make_linear(inner, d_model, ranks.get("out"))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, _ = x.shape
        return x.view(batch, time, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None,
                key_valid: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, T, D] -> (y [B, T, D], (keys, values) [B, H, S + T, d]).

        Without `past` the T positions attend causally among themselves. With `past` (the
        cached keys and values [B, H, S, d]) the new positions attend to the cache and
        causally to each other; `key_valid` [B, S + T] marks the keys that exist (a batch of
        hypotheses of different lengths pads its caches).
        """
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)
            v = torch.cat([past[1], v], dim=2)
        p = self.dropout if self.training else 0.0
        time, total = q.shape[2], k.shape[2]
        if past is None and key_valid is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            allowed = torch.ones(time, total, dtype=torch.bool, device=x.device).tril(total - time)
            mask = allowed[None, None]
            if key_valid is not None:
                mask = mask & key_valid[:, None, None, :]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        batch = x.shape[0]
        y = y.transpose(1, 2).reshape(batch, time, self.heads * self.head_dim)
        return self.out(y), (k, v)


class FeedForward(nn.Module):
    """ReLU feed-forward sublayer, `units` wide (ESPnet's PositionwiseFeedForward)."""

    def __init__(self, d_model: int, units: int, dropout: float,
                 ranks: dict[str, int] | None = None) -> None:
        super().__init__()
        ranks = ranks or {}
        self.up = make_linear(d_model, units, ranks.get("up"))
        self.down = make_linear(units, d_model, ranks.get("down"))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]."""
        return self.down(self.drop(torch.relu(self.up(x))))


def sinusoidal_positions(positions: torch.Tensor, d_model: int) -> torch.Tensor:
    """ESPnet's PositionalEncoding table at integer `positions` (any shape) -> [..., D]:
    sin on even, cos on odd features, wavelengths 10000^(2i/D)."""
    div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32, device=positions.device)
                    * -(math.log(10000.0) / d_model))
    angles = positions.to(torch.float32)[..., None] * div
    table = torch.zeros(*positions.shape, d_model, device=positions.device)
    table[..., 0::2] = torch.sin(angles)
    table[..., 1::2] = torch.cos(angles)
    return table
