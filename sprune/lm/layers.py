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
        self._stacked: tuple[tuple, torch.Tensor, torch.Tensor] | None = None  # _stacked_weights

    def _project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v [B, T, H d]. Without autograd and hooks (decoding), dense projections run
        as one product over their stacked weights: a decoding step of a model with few heads
        left is bound by the number of small products more than by their FLOPs."""
        projections = (self.q, self.k, self.v)
        if (torch.is_grad_enabled() or not all(type(m) is nn.Linear for m in projections)
                or any(m._forward_hooks or m._forward_pre_hooks for m in (self, *projections))):
            return self.q(x), self.k(x), self.v(x)
        weight, bias = self._stacked_weights()
        return F.linear(x, weight, bias).chunk(3, dim=-1)

    def _stacked_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W [3 H d, D], b [3 H d]) of q, k, v; cached, rebuilt when a weight is replaced or
        changed in place (its storage or version counter moves: training, HardMask)."""
        params = [p for m in (self.q, self.k, self.v) for p in (m.weight, m.bias)]
        key = tuple((p.data_ptr(), -1 if p.is_inference() else p._version, p.dtype, p.device)
                    for p in params)
        if self._stacked is None or self._stacked[0] != key:
            with torch.no_grad():
                self._stacked = (key, torch.cat(params[0::2]), torch.cat(params[1::2]))
        return self._stacked[1], self._stacked[2]

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, _ = x.shape
        return x.view(batch, time, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                start: int = 0, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, D] -> y [B, T, D].

        Without `cache` the T positions attend causally among themselves (training). With
        `cache` (key and value buffers [B, H, C, d], C >= start + T) the new keys and values
        are written in place at positions start .. start + T - 1 and the new positions attend
        to every position before them; `key_valid` [B, start + T] marks the keys that exist
        (a batch of hypotheses of different lengths pads its caches), None: all of them.
        """
        q, k, v = (self._split(t) for t in self._project(x))
        p = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            time, total = q.shape[2], start + q.shape[2]
            keys, values = cache
            keys[:, :, start:total] = k
            values[:, :, start:total] = v
            mask = None   # one new token over a full cache attends to everything: no mask
            if time > 1:
                mask = torch.ones(time, total, dtype=torch.bool, device=x.device).tril(start)[None, None]
            if key_valid is not None:
                valid = key_valid[:, None, None, :]
                mask = valid if mask is None else mask & valid
            y = F.scaled_dot_product_attention(q, keys[:, :, :total], values[:, :, :total],
                                               attn_mask=mask, dropout_p=p)
        batch, time = x.shape[0], x.shape[1]
        y = y.transpose(1, 2).reshape(batch, time, self.heads * self.head_dim)
        return self.out(y)


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
        hidden = torch.relu(self.up(x))
        return self.down(self.drop(hidden) if self.training else hidden)


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
