"""Multi-head self-attention whose heads may each have their own size, and WavLM's gated
relative position bias.

Layout of the projections (what masks and shrinking index): `q_proj` / `k_proj` have
`sum(qk_dims)` output rows, head h owning rows `[sum(qk_dims[:h]), sum(qk_dims[:h+1]))`;
`v_proj` has `sum(vo_dims)` rows and `out_proj` as many input columns, laid out the same way.
Heads of unequal size are zero-padded to the layer's largest size before one fused
`scaled_dot_product_attention` call: zero query-key dimensions add nothing to the scores and
zero value dimensions are dropped again, so padding never changes the result. Queries, keys
and values share that one padded size: SDPA's fused CPU / GPU kernels need equal query-key
and value head sizes, and its fallback for unequal ones ran 2-2.6x slower here.

On CUDA without autograd (feature extraction, frozen upstreams) and without hooks on the
projections, `SelfAttention` runs one fused query-key-value projection whose weights are
already in the padded layout (built once and rebuilt when a weight changes), and an output
projection with zero columns at the padding. A batch-1 GPU forward of a base-size model is
bound by the CPU launching kernels; measured on an H100, the fused path takes the launches
of a forward from 253 to 229 for wav2vec2 Base and from 360 to 223 for the shrunk model of
bench/structured_speedup.py (28 % of the parameters), which until then ran no faster than
the dense one. The cache is a second copy of the q, k, v weights on the GPU (85 MB for
wav2vec2 Base in float32, 300 MB for a Large model). The CPU keeps the per-forward padding
and no second copy of the weights: there the fused path made no difference (that shrunk
model, 10 s of audio, one thread: 983 vs 982 ms).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def relative_position_buckets(query_length: int, key_length: int, num_buckets: int,
                              max_distance: int, device: torch.device | None = None) -> Tensor:
    """WavLM's bidirectional log-spaced buckets of key - query offsets: [Tq, Tk] int64.

    Half the buckets hold keys after the query. Offsets below a quarter of `num_buckets`
    get a bucket each, larger ones share log-spaced buckets up to `max_distance`.
    """
    offsets = (torch.arange(key_length, device=device)[None, :]
               - torch.arange(query_length, device=device)[:, None])
    half = num_buckets // 2
    buckets = (offsets > 0).long() * half
    distance = offsets.abs()
    exact = half // 2
    # Same float32 operation order as the reference implementations (bucket edges must agree).
    log_ratio = torch.log(distance.float() / exact) / math.log(max_distance / exact)
    far = exact + (log_ratio * (half - exact)).long()
    far = torch.clamp(far, max=half - 1)
    return buckets + torch.where(distance < exact, distance, far)


class GatedPositionBias(nn.Module):
    """WavLM's gate: scales the shared relative position bias per head and frame.

    `linear` ([8, head_dim], WavLM's `gru_rel_pos_linear`) and `const` ([H_kept],
    `gru_rel_pos_const`) compute gate = a * (b * const - 1) + 2 from sigmoids a and b.

    The gate reads the layer input split into the ORIGINAL `num_heads` chunks, so a layer
    that lost heads still computes the kept heads' gates from their own input chunks.
    """

    def __init__(self, original_heads: int, head_dim: int, kept_heads: list[int]) -> None:
        super().__init__()
        self.original_heads = original_heads
        self.linear = nn.Linear(head_dim, 8)
        self.const = nn.Parameter(torch.ones(len(kept_heads)))
        self.register_buffer("kept_heads", torch.tensor(kept_heads, dtype=torch.long),
                             persistent=False)
        self.all_heads = kept_heads == list(range(original_heads))

    def forward(self, x: Tensor, position_bias: Tensor) -> Tensor:
        """x: [B, T, D] layer input; position_bias: [H_kept, T, T]. Returns [B, H_kept, T, T]."""
        batch, frames, _ = x.shape
        chunks = x.view(batch, frames, self.original_heads, -1)
        if not self.all_heads:
            chunks = chunks.index_select(2, self.kept_heads)
        projected = self.linear(chunks.transpose(1, 2))  # [B, H, T, 8]
        projected = projected.view(*projected.shape[:-1], 2, 4).sum(-1)
        gate_a, gate_b = torch.sigmoid(projected).chunk(2, dim=-1)  # [B, H, T, 1] each
        const = self.const.view(1, -1, 1, 1)
        gate = gate_a * (gate_b * const - 1.0) + 2.0
        return gate * position_bias.unsqueeze(0)


class SelfAttention(nn.Module):
    """Self-attention over `len(kept_heads)` heads of sizes `qk_dims` / `vo_dims`.

    Scores are scaled by 1/sqrt(head_dim) with `head_dim` the ORIGINAL head size, whatever
    the kept sizes, so removing masked dimensions leaves the output unchanged.
    """

    def __init__(self, embed_dim: int, head_dim: int, kept_heads: list[int], qk_dims: list[int],
                 vo_dims: list[int], dropout: float = 0.0, original_heads: int | None = None,
                 gated_position_bias: bool = False) -> None:
        super().__init__()
        if not kept_heads:
            raise ValueError("an attention block needs at least one head; use None instead")
        self.num_heads = len(kept_heads)
        self.qk_dims = list(qk_dims)
        self.vo_dims = list(vo_dims)
        self.scale = head_dim ** -0.5
        self.dropout = dropout
        self.q_proj = nn.Linear(embed_dim, sum(qk_dims))
        self.k_proj = nn.Linear(embed_dim, sum(qk_dims))
        self.v_proj = nn.Linear(embed_dim, sum(vo_dims))
        self.out_proj = nn.Linear(sum(vo_dims), embed_dim)
        self.register_buffer("kept_heads", torch.tensor(kept_heads, dtype=torch.long),
                             persistent=False)
        self.all_heads = original_heads is None or kept_heads == list(range(original_heads))
        self.gate = (GatedPositionBias(original_heads or self.num_heads, head_dim, kept_heads)
                     if gated_position_bias else None)
        # every head (and query-key vs value) of one size: no padding
        self.uniform = len(set(qk_dims) | set(vo_dims)) == 1 and qk_dims[0] > 0
        self.head_size = max(1, *qk_dims, *vo_dims)
        self._fused: tuple[tuple, Tensor, Tensor, Tensor] | None = None  # see _fused_weights
        if not self.uniform:
            self.register_buffer("qk_slots", _padded_slots(qk_dims, self.head_size),
                                 persistent=False)
            self.register_buffer("vo_slots", _padded_slots(vo_dims, self.head_size),
                                 persistent=False)

    def _heads(self, flat: Tensor, size: int, slots: Tensor | None) -> Tensor:
        """[B, T, sum(dims)] -> [B, H, T, size], zero-padding heads smaller than `size`."""
        batch, frames, _ = flat.shape
        if slots is not None:
            padded = flat.new_zeros(batch, frames, self.num_heads * size)
            flat = padded.index_copy(2, slots, flat)
        return flat.view(batch, frames, self.num_heads, size).transpose(1, 2)

    def _projections(self) -> tuple[nn.Linear, ...]:
        return self.q_proj, self.k_proj, self.v_proj, self.out_proj

    def _fusable(self, x: Tensor) -> bool:
        """Whether the fused projections replace the four Linear calls (see module doc)."""
        return x.is_cuda and self._may_fuse()

    def _may_fuse(self) -> bool:
        """No autograd, and no hooks that expect the projections to run as modules."""
        return not torch.is_grad_enabled() and not any(
            m._forward_hooks or m._forward_pre_hooks for m in (self, *self._projections()))

    def _fused_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """(W_qkv [3 * H * size, D], b_qkv [3 * H * size], W_out [D, H * size]): the q, k, v
        projections stacked in the zero-padded head layout, and out_proj's weight with zero
        columns at the padding. Cached; rebuilt when a weight is replaced or changed in place
        (its storage or version counter moves). Weights made under `torch.inference_mode`
        have no version counter: for them only a replacement is seen (weights are not
        updated in place inside inference mode)."""
        params = [p for m in self._projections() for p in (m.weight, m.bias)]
        key = tuple((p.data_ptr(), -1 if p.is_inference() else p._version, p.dtype)
                    for p in params)
        if self._fused is None or self._fused[0] != key:
            with torch.no_grad():
                qk_slots = None if self.uniform else self.qk_slots
                vo_slots = None if self.uniform else self.vo_slots
                rows = self.num_heads * self.head_size
                inputs = ((self.q_proj, qk_slots), (self.k_proj, qk_slots),
                          (self.v_proj, vo_slots))
                weight = torch.cat([_scatter(proj.weight, slots, rows, 0)
                                    for proj, slots in inputs])
                bias = torch.cat([_scatter(proj.bias, slots, rows, 0) for proj, slots in inputs])
                out = _scatter(self.out_proj.weight, vo_slots, rows, 1)
                self._fused = (key, weight, bias, out)
        return self._fused[1:]

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None,
                position_bias: Tensor | None = None) -> Tensor:
        """x: [B, T, D]; key_padding_mask: [B, T] bool, True = padded frame (or None);
        position_bias: [H_original, T, T] relative position bias (WavLM) or None.
        Returns [B, T, D]."""
        batch, frames, _ = x.shape
        fused = self._fusable(x)
        qk_slots = None if self.uniform else self.qk_slots
        vo_slots = None if self.uniform else self.vo_slots
        if fused:
            qkv_weight, qkv_bias, out_weight = self._fused_weights()
            qkv = F.linear(x, qkv_weight, qkv_bias).view(batch, frames, 3, self.num_heads,
                                                         self.head_size)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, H, T, size] each
        else:
            q = self._heads(self.q_proj(x), self.head_size, qk_slots)
            k = self._heads(self.k_proj(x), self.head_size, qk_slots)
            v = self._heads(self.v_proj(x), self.head_size, vo_slots)

        attn_mask: Tensor | None = None
        if position_bias is not None:
            bias = position_bias if self.all_heads else position_bias.index_select(
                0, self.kept_heads)
            attn_mask = self.gate(x, bias) if self.gate is not None else bias.unsqueeze(0)
            if key_padding_mask is not None:
                attn_mask = attn_mask.masked_fill(key_padding_mask[:, None, None, :],
                                                  float("-inf"))
        elif key_padding_mask is not None:
            attn_mask = ~key_padding_mask[:, None, None, :]  # True = attend
        if attn_mask is not None and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)  # under autocast q may be half precision
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.dropout if self.training else 0.0,
            scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, frames, self.num_heads * self.head_size)
        if fused:
            return F.linear(out, out_weight, self.out_proj.bias)
        if vo_slots is not None:
            out = out.index_select(2, vo_slots)
        return self.out_proj(out)


def _scatter(tensor: Tensor, slots: Tensor | None, size: int, dim: int) -> Tensor:
    """`tensor` with its `dim` spread over `size` positions at `slots` (zeros elsewhere);
    `tensor` itself when `slots` is None (no padding)."""
    if slots is None:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = size
    return tensor.new_zeros(shape).index_copy_(dim, slots, tensor)


def _padded_slots(dims: list[int], size: int) -> Tensor:
    """Positions of each head's dims inside the zero-padded [H * size] layout."""
    slots = [h * size + d for h, dim in enumerate(dims) for d in range(dim)]
    return torch.tensor(slots, dtype=torch.long)
