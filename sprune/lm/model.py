"""A pruning-aware causal Transformer LM with a key/value cache and ESPnet's scorer interface.

    lm = TransformerLM(LMConfig(vocab_size=1000))
    out = lm({"tokens": tokens, "lengths": lengths})       # training: {"loss", "nll_sum", ...}
    logp, cache = lm.step(last_tokens, cache)               # one cached step for B hypotheses
    logp, states = lm.batch_score(ys, states, xs)           # ESPnet BatchScorerInterface

The layout is ESPnet's `TransformerLM` (see `sprune.lm.config`), so `sprune lm import/export`
convert weights one to one. Pruning sees an ordinary module: masks from `sprune.prune` zero
its weights, and `parameter_groups()` names each block's Linear layers the way the pruning
scopes expect (`layers.{i}.attention.{q,k,v,out}`, `layers.{i}.ffn.{up,down}`).

Decoding state: the cache holds, per block, the keys and values of every position seen so
far, in buffers [B, H, C, d] that steps append to in place, so a step projects only the new
token (ESPnet's TransformerLM caches block outputs and projects the keys and values of the
whole prefix again at every step). Hypotheses of a batch may have different lengths:
`LMCache.valid` marks the real entries and `LMCache.lengths` the position of each one's next
token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from espnet.nets.scorer_interface import BatchScorerInterface
from torch import nn

from sprune.lm.config import BLOCK_LINEARS, LMConfig
from sprune.lm.layers import CausalSelfAttention, FeedForward, sinusoidal_positions


class Block(nn.Module):
    """Pre-LN block: x + attention(norm(x)), then x + ffn(norm(x)). A sublayer pruned to
    zero heads or units is absent (the block passes its input through it)."""

    def __init__(self, config: LMConfig, index: int) -> None:
        super().__init__()
        heads, units = config.heads_of(index), config.ffn_of(index)
        ranks = {name.split(".", 2)[2]: rank for name, rank in config.ranks.items()
                 if name.startswith(f"layers.{index}.")}
        attention_ranks = {k.split(".")[1]: r for k, r in ranks.items() if k.startswith("attention.")}
        ffn_ranks = {k.split(".")[1]: r for k, r in ranks.items() if k.startswith("ffn.")}
        self.attention_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps) if heads else None
        self.attention = (CausalSelfAttention(config.d_model, heads, config.head_dim,
                                              config.attention_dropout, attention_ranks)
                          if heads else None)
        self.ffn_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps) if units else None
        self.ffn = FeedForward(config.d_model, units, config.dropout, ffn_ranks) if units else None
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None = None,
                start: int = 0, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, D] -> [B, T, D]; `cache`, `start`, `key_valid`: see CausalSelfAttention."""
        if self.attention is not None:
            y = self.attention(self.attention_norm(x), cache, start, key_valid)
            x = x + (self.drop(y) if self.training else y)
        if self.ffn is not None:
            y = self.ffn(self.ffn_norm(x))
            x = x + (self.drop(y) if self.training else y)
        return x


@dataclass
class LMCache:
    """Decoding state of B hypotheses.

    keys / values: per block a buffer [B, H, C, d] (None for a block without attention) whose
    first `size` positions are filled; C >= size leaves room to append in place.
    valid [B, C]: which filled positions exist for each hypothesis (hypotheses of different
    lengths stacked into one cache leave gaps; `ragged` says whether any gap exists).
    lengths [B]: tokens seen by each hypothesis, the position of its next token.

    `TransformerLM.step` writes into the buffers in place and returns the same buffers: a
    cache is consumed by the step that extends it (branch with `select`, which copies).
    """

    keys: list[torch.Tensor | None]
    values: list[torch.Tensor | None]
    valid: torch.Tensor
    lengths: torch.Tensor
    size: int = 0
    ragged: bool = False

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    def select(self, index: torch.Tensor) -> "LMCache":
        """The cache of hypotheses `index` [B'] (beam reordering; repeats allowed; copies)."""
        pick = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
        return LMCache([pick(k) for k in self.keys], [pick(v) for v in self.values],
                       self.valid.index_select(0, index), self.lengths.index_select(0, index),
                       self.size, self.ragged)


class TransformerLM(nn.Module, BatchScorerInterface):
    """Causal Transformer LM over a token vocabulary whose last id is `<sos/eos>`."""

    def __init__(self, config: LMConfig) -> None:
        super().__init__()
        if config.vocab_size < 3:
            raise ValueError(f"vocab_size {config.vocab_size} < 3; set it from the BPE model")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embed_dim)
        self.input_proj = nn.Linear(config.embed_dim, config.d_model)
        self.input_norm = nn.LayerNorm(config.d_model, eps=config.input_norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.norm_eps)
        self.output = nn.Linear(config.d_model, config.vocab_size)
        self._position_table: torch.Tensor | None = None

    @property
    def sos_eos(self) -> int:
        return self.config.vocab_size - 1

    # -- the network -------------------------------------------------------------------------
    def _positions(self, positions: torch.Tensor, bound: int) -> torch.Tensor:
        """The sinusoidal table at `positions` [B, T] (all < `bound`) -> [B, T, D], from a
        table kept beside the model (not a weight: it is not saved), grown when needed."""
        needed = max(bound, 1)
        table = self._position_table
        if table is None or table.shape[0] < needed or table.device != positions.device:
            size = max(needed, 2 * (table.shape[0] if table is not None else 0), 512)
            table = sinusoidal_positions(torch.arange(size, device=positions.device),
                                         self.config.d_model)
            self._position_table = table
        return table[positions]

    def _input(self, tokens: torch.Tensor, positions: torch.Tensor, bound: int) -> torch.Tensor:
        """tokens [B, T], positions [B, T] (all < `bound`) -> block input [B, T, D]."""
        x = self.input_norm(self.input_proj(self.embed(tokens)))
        x = torch.relu(self.drop(x) if self.training else x)
        if self.config.pos_enc == "sinusoidal":
            x = x * self.config.d_model ** 0.5 + self._positions(positions, bound).to(x.dtype)
            if self.training:
                x = self.drop(x)
        return x

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] (starting with <sos>) -> next-token logits [B, T, V], causally."""
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        x = self._input(tokens, positions, tokens.shape[1])
        for block in self.layers:
            x = block(x)
        return self.output(self.final_norm(x))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Training / evaluation loss of padded sentences.

        batch["tokens"] [B, T]: `<sos> w_1 .. w_n <eos>` padded; batch["lengths"] [B]: n + 2.
        Returns loss (mean NLL per predicted token), nll_sum and num_tokens (for perplexity).
        """
        tokens, lengths = batch["tokens"], batch["lengths"]
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        logits = self.logits(inputs)
        predicted = (torch.arange(targets.shape[1], device=tokens.device)[None, :]
                     < (lengths[:, None] - 1))
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                              reduction="none").view_as(targets)
        nll_sum = (nll * predicted).sum()
        count = predicted.sum()
        return {"loss": nll_sum / count.clamp(min=1), "nll_sum": nll_sum.detach(),
                "num_tokens": count.detach(), "loss_weight": count.detach()}

    def init_cache(self, batch_size: int, device: torch.device | str | None = None,
                   capacity: int = 0) -> LMCache:
        """An empty cache for `batch_size` hypotheses (room for `capacity` tokens; it grows)."""
        device = device or self.output.weight.device
        cache = LMCache([None] * len(self.layers), [None] * len(self.layers),
                        torch.zeros(batch_size, 0, dtype=torch.bool, device=device),
                        torch.zeros(batch_size, dtype=torch.long, device=device))
        return self._reserve(cache, capacity)

    def _reserve(self, cache: LMCache, needed: int) -> LMCache:
        """`cache` with room for `needed` positions in all (buffers doubled when they grow)."""
        if needed <= cache.capacity:
            return cache
        capacity = max(needed, 2 * cache.capacity, 16)
        batch, device = cache.valid.shape[0], cache.valid.device
        dtype = self.output.weight.dtype

        def grown(old: torch.Tensor | None, block: Block) -> torch.Tensor | None:
            if block.attention is None:
                return None
            att = block.attention
            new = torch.zeros(batch, att.heads, capacity, att.head_dim, dtype=dtype, device=device)
            if old is not None:
                new[:, :, :cache.size] = old[:, :, :cache.size]
            return new

        valid = torch.zeros(batch, capacity, dtype=torch.bool, device=device)
        valid[:, :cache.size] = cache.valid[:, :cache.size]
        return LMCache([grown(k, b) for k, b in zip(cache.keys, self.layers)],
                       [grown(v, b) for v, b in zip(cache.values, self.layers)],
                       valid, cache.lengths, cache.size, cache.ragged)

    def step(self, tokens: torch.Tensor, cache: LMCache) -> tuple[torch.Tensor, LMCache]:
        """Feed `tokens` [B, T] after what `cache` holds -> (log-probs of the token after the
        last one [B, V], the cache extended by T positions, in place). T is usually 1 (one
        decoding step); a first call with an empty cache may feed whole prefixes."""
        batch, time = tokens.shape
        cache = self._reserve(cache, cache.size + time)
        start = cache.size
        positions = cache.lengths[:, None] + torch.arange(time, device=tokens.device)[None, :]
        cache.valid[:, start:start + time] = True
        key_valid = cache.valid[:, :start + time] if cache.ragged else None
        x = self._input(tokens, positions, start + time)
        for block, keys, values in zip(self.layers, cache.keys, cache.values):
            x = block(x, None if keys is None else (keys, values), start, key_valid)
        logits = self.output(self.final_norm(x[:, -1]))
        cache = LMCache(cache.keys, cache.values, cache.valid, cache.lengths + time,
                        start + time, cache.ragged)
        return logits.float().log_softmax(dim=-1), cache

    # -- ESPnet's scorer interface -----------------------------------------------------------
    # A hypothesis' state is (keys, values, valid) of its own positions: per block [H, S, d]
    # (None without attention) and valid [S]. `select_state` is the interface default.
    def init_state(self, x: Any = None) -> None:
        return None

    def score(self, y: torch.Tensor, state: Any, x: Any = None) -> tuple[torch.Tensor, Any]:
        """y [L] prefix (starting with <sos>) -> (log-probs of the next token [V], new state)."""
        logp, states = self.batch_score(y[None], [state], None)
        return logp[0], states[0]

    def batch_score(self, ys: torch.Tensor, states: Sequence[Any], xs: Any = None
                    ) -> tuple[torch.Tensor, list[Any]]:
        """ys [N, L] prefixes, states: one per hypothesis (None before its first step) ->
        (log-probs [N, V], new states). With states, only the last token of each prefix is fed."""
        if all(s is None for s in states):
            cache, tokens = self.init_cache(len(ys), ys.device), ys
        else:
            cache, tokens = self.stack_states(states), ys[:, -1:]
        logp, cache = self.step(tokens, cache)
        return logp, self.unstack_states(cache)

    def stack_states(self, states: Sequence[Any]) -> LMCache:
        """Per-hypothesis states -> one cache, padded to the longest (valid marks the rest),
        with room for one more position."""
        sizes = [s[2].shape[0] for s in states]
        longest, device = max(sizes), states[0][2].device
        cache = self._reserve(self.init_cache(len(states), device), longest + 1)
        for b, (keys, values, valid) in enumerate(states):
            for i in range(len(self.layers)):
                if keys[i] is not None:
                    cache.keys[i][b, :, :sizes[b]] = keys[i]
                    cache.values[i][b, :, :sizes[b]] = values[i]
            cache.valid[b, :sizes[b]] = valid
        filled = cache.valid[:, :longest]
        return LMCache(cache.keys, cache.values, cache.valid, filled.sum(dim=1), longest,
                       not bool(filled.all()))

    @staticmethod
    def unstack_states(cache: LMCache) -> list[Any]:
        """One cache -> per-hypothesis states (views of its filled positions, no copies)."""
        size = cache.size
        return [([None if k is None else k[b, :, :size] for k in cache.keys],
                 [None if v is None else v[b, :, :size] for v in cache.values],
                 cache.valid[b, :size]) for b in range(cache.valid.shape[0])]

    # -- what pruning needs ------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[str]]:
        """Named groups of parameter names: each block Linear `layers.{i}.attention.q`, ...
        (weight and bias, or a factorized layer's two factors and bias), `embedding`,
        `input`, `output`, `norms`, `transformer` (every block Linear) and `all` (every
        weight matrix, embeddings included)."""
        names = [n for n, _ in self.named_parameters()]
        groups: dict[str, list[str]] = {}
        for i, block in enumerate(self.layers):
            for linear in BLOCK_LINEARS:
                prefix = f"layers.{i}.{linear}."
                members = [n for n in names if n.startswith(prefix)]
                if members:
                    groups[f"layers.{i}.{linear}"] = members
        groups["embedding"] = ["embed.weight"]
        groups["input"] = [n for n in names if n.startswith(("input_proj.", "input_norm."))]
        groups["output"] = [n for n in names if n.startswith("output.")]
        groups["norms"] = [n for n in names if "norm." in n]
        groups["transformer"] = [n for g, m in groups.items() if g.startswith("layers.") for n in m]
        params = dict(self.named_parameters())
        groups["all"] = [n for n in names if params[n].dim() >= 2]
        return groups

    def num_parameters(self, nonzero: bool = False) -> int:
        """Parameters of the model (or its non-zero ones: what a masked model really keeps)."""
        if nonzero:
            return sum(int(torch.count_nonzero(p)) for p in self.parameters())
        return sum(p.numel() for p in self.parameters())
