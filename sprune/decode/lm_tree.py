"""The keys and values of a sprune LM over a prefix tree of hypotheses, for beam searches.

A beam search reorders and copies hypotheses at every frame; an LM cache laid out per
hypothesis ([B, H, C, d] per block, `sprune.lm.model.LMCache`) would be copied with them.
Here every token the LM has read is a node of a tree: its keys and values sit once in a pool
[P, H, d] per block, and a hypothesis is a path of node ids [L]. Reordering hypotheses moves
paths (small integer tensors); extending E hypotheses by one token gathers their paths' keys
and values (what the attention reads anyway), runs one cached LM step for the E new tokens
and appends E nodes. Hypotheses that share a prefix share its nodes.

Node 0 is `<sos>`, read once: every path starts with it.
"""
from __future__ import annotations

import torch

from sprune.lm.model import LMCache, TransformerLM


class LMPrefixTree:
    """Pools of keys / values / next-token log-probs of the nodes of a prefix tree.

    keys[i], values[i]  [P, H_i, d] of block i (None for a block without attention)
    log_probs           [P, V] log-probs of the token after each node's prefix
    """

    def __init__(self, lm: TransformerLM, device: torch.device | str | None = None,
                 capacity: int = 256) -> None:
        self.lm = lm
        self.device = torch.device(device) if device is not None else lm.output.weight.device
        self.size = 0
        dtype = lm.output.weight.dtype
        self.keys: list[torch.Tensor | None] = []
        for block in lm.layers:
            att = block.attention
            self.keys.append(None if att is None else
                             torch.zeros(capacity, att.heads, att.head_dim, dtype=dtype,
                                         device=self.device))
        self.values = [None if k is None else torch.zeros_like(k) for k in self.keys]
        self.log_probs = torch.zeros(capacity, lm.config.vocab_size, device=self.device)
        root = torch.full((1,), lm.sos_eos, dtype=torch.long, device=self.device)
        self.extend(root, torch.zeros(1, 0, dtype=torch.long, device=self.device),
                    torch.zeros(1, dtype=torch.long, device=self.device))

    def _grow(self, needed: int) -> None:
        capacity = self.log_probs.shape[0]
        if needed <= capacity:
            return
        capacity = max(needed, 2 * capacity)

        def grown(old: torch.Tensor | None) -> torch.Tensor | None:
            if old is None:
                return None
            new = old.new_zeros(capacity, *old.shape[1:])
            new[:self.size] = old[:self.size]
            return new

        self.keys = [grown(k) for k in self.keys]
        self.values = [grown(v) for v in self.values]
        self.log_probs = grown(self.log_probs)

    @torch.no_grad()
    def extend(self, tokens: torch.Tensor, paths: torch.Tensor, lengths: torch.Tensor
               ) -> torch.Tensor:
        """Read `tokens` [E] after the prefixes `paths` [E, L] (node ids, the first `lengths`
        [E] of each row valid) -> the ids [E] of the E new nodes, whose next-token log-probs
        are `log_probs[ids]`."""
        count = tokens.shape[0]
        width = int(lengths.max()) if count else 0
        paths = paths[:, :width]
        keys, values = [], []
        for pool_k, pool_v in zip(self.keys, self.values):
            if pool_k is None:
                keys.append(None)
                values.append(None)
                continue
            heads, dim = pool_k.shape[1:]
            k = pool_k.new_empty(count, heads, width + 1, dim)
            v = pool_v.new_empty(count, heads, width + 1, dim)
            k[:, :, :width] = pool_k[paths].transpose(1, 2)
            v[:, :, :width] = pool_v[paths].transpose(1, 2)
            keys.append(k)
            values.append(v)
        column = torch.arange(width + 1, device=self.device)
        valid = (column[None, :] < lengths[:, None]) | (column[None, :] == width)
        cache = LMCache(keys, values, valid, lengths, size=width, ragged=True)
        log_probs, cache = self.lm.step(tokens[:, None], cache)
        ids = torch.arange(self.size, self.size + count, device=self.device)
        self._grow(self.size + count)
        for i, (k, v) in enumerate(zip(cache.keys, cache.values)):
            if k is not None:
                self.keys[i][ids] = k[:, :, width]
                self.values[i][ids] = v[:, :, width]
        self.log_probs[ids] = log_probs
        self.size += count
        return ids
