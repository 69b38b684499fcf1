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
far, [B, H, S, d], so a step projects only the new token (ESPnet's TransformerLM caches block
outputs and projects the keys and values of the whole prefix again at every step). Positions
of a batch may have different lengths: `LMCache.valid` [B, S] marks the real entries and the
next token of hypothesis b sits at position `valid[b].sum()`.
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

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None,
                key_valid: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """x [B, T, D] -> (x [B, T, D], this block's keys and values [B, H, S + T, d] or None)."""
        present = None
        if self.attention is not None:
            y, present = self.attention(self.attention_norm(x), past, key_valid)
            x = x + self.drop(y)
        if self.ffn is not None:
            x = x + self.drop(self.ffn(self.ffn_norm(x)))
        return x, present


@dataclass
class LMCache:
    """Keys and values per block ([B, H, S, d], None for a block without attention) and
    `valid` [B, S]: which of the S cached positions exist for each hypothesis."""

    keys: list[torch.Tensor | None]
    values: list[torch.Tensor | None]
    valid: torch.Tensor

    @property
    def lengths(self) -> torch.Tensor:
        """[B] tokens seen by each hypothesis (the position of its next token)."""
        return self.valid.sum(dim=1)

    def select(self, index: torch.Tensor) -> "LMCache":
        """The cache of hypotheses `index` [B'] (beam reordering; repeats allowed)."""
        pick = lambda t: None if t is None else t.index_select(0, index)  # noqa: E731
        return LMCache([pick(k) for k in self.keys], [pick(v) for v in self.values],
                       self.valid.index_select(0, index))


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

    @property
    def sos_eos(self) -> int:
        return self.config.vocab_size - 1

    # -- the network -------------------------------------------------------------------------
    def _input(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """tokens [B, T], positions [B, T] -> block input [B, T, D]."""
        x = torch.relu(self.drop(self.input_norm(self.input_proj(self.embed(tokens)))))
        if self.config.pos_enc == "sinusoidal":
            d_model = self.config.d_model
            x = x * d_model ** 0.5 + sinusoidal_positions(positions, d_model).to(x.dtype)
            x = self.drop(x)
        return x

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, T] (starting with <sos>) -> next-token logits [B, T, V], causally."""
        positions = torch.arange(tokens.shape[1], device=tokens.device).expand_as(tokens)
        x = self._input(tokens, positions)
        for block in self.layers:
            x, _ = block(x)
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
                "num_tokens": count.detach()}

    def init_cache(self, batch_size: int, device: torch.device | str | None = None) -> LMCache:
        """An empty cache for `batch_size` hypotheses."""
        device = device or self.output.weight.device
        return LMCache([None] * len(self.layers), [None] * len(self.layers),
                       torch.zeros(batch_size, 0, dtype=torch.bool, device=device))

    def step(self, tokens: torch.Tensor, cache: LMCache) -> tuple[torch.Tensor, LMCache]:
        """Feed `tokens` [B, T] after what `cache` holds -> (log-probs of the token after the
        last one [B, V], the cache extended by T positions). T is usually 1 (one decoding
        step); a first call with an empty cache may feed whole prefixes."""
        batch, time = tokens.shape
        positions = cache.lengths[:, None] + torch.arange(time, device=tokens.device)[None, :]
        valid = torch.cat([cache.valid, torch.ones(batch, time, dtype=torch.bool,
                                                   device=cache.valid.device)], dim=1)
        dense = bool(valid.all()) if valid.numel() else True
        x = self._input(tokens, positions)
        keys, values = [], []
        for i, block in enumerate(self.layers):
            past = None if cache.keys[i] is None else (cache.keys[i], cache.values[i])
            x, present = block(x, past, None if dense and past is None else valid)
            keys.append(None if present is None else present[0])
            values.append(None if present is None else present[1])
        logits = self.output(self.final_norm(x[:, -1]))
        return logits.float().log_softmax(dim=-1), LMCache(keys, values, valid)

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
        """Per-hypothesis states -> one cache, padded to the longest (valid marks the rest)."""
        longest = max(s[2].shape[0] for s in states)

        def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
            missing = longest - t.shape[dim]
            if not missing:
                return t
            shape = list(t.shape)
            shape[dim] = missing
            return torch.cat([t, t.new_zeros(shape)], dim=dim)

        keys, values = [], []
        for i in range(len(self.layers)):
            if states[0][0][i] is None:
                keys.append(None)
                values.append(None)
                continue
            keys.append(torch.stack([pad(s[0][i], 1) for s in states]))
            values.append(torch.stack([pad(s[1][i], 1) for s in states]))
        valid = torch.stack([pad(s[2], 0) for s in states])
        return LMCache(keys, values, valid)

    @staticmethod
    def unstack_states(cache: LMCache) -> list[Any]:
        """One cache -> per-hypothesis states (views, no copies)."""
        return [([None if k is None else k[b] for k in cache.keys],
                 [None if v is None else v[b] for v in cache.values],
                 cache.valid[b]) for b in range(cache.valid.shape[0])]

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
