"""Structured units of an LM as mask-engine units: attention heads, feed-forward units,
whole blocks and the rank components of factorized layers.

A unit owns slices of several parameters (head h: rows h*d..(h+1)*d of q, k, v and their
biases, the same columns of the output projection). To let `sprune.prune.select` choose units
like any other, each group of units is laid out as a virtual score matrix [units, weights per
unit]: row u holds the scores of the weights unit u owns, so `select_mask(..., granularity=
"row")` prunes whole units, ranks them by their mean weight score (importance per parameter,
which makes heads, FFN units and rank components of different sizes comparable under one
parameter budget) and counts the budget in weights. The unit-level mask then expands back
onto the parameters (`UnitMap.expand`), biases included, as an ordinary `Mask` that
`HardMask` trains and `sprune.lm.shrink` turns into a smaller model.

Collapse: a sublayer whose heads (or units) are all pruned loses its remaining parameters too
(the output-projection bias and its LayerNorm), so the masked model computes exactly what the
shrunk model without that sublayer computes; a block with neither sublayer is gone.

Kinds: `heads`, `ffn`, `blocks` (a block is one unit: all its weights), `rank` (factorized
layers only; component k = row k of `first.weight` with column k of `second.weight`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch

from sprune.errors import UserError
from sprune.lm.layers import LowRankLinear
from sprune.lm.model import TransformerLM
from sprune.prune.mask import Mask
from sprune.prune.select import select_mask

KINDS = ("heads", "ffn", "blocks", "rank")


@dataclass(frozen=True)
class Slice:
    """Indices `start:stop` along dimension `dim` of parameter `param`."""

    param: str
    dim: int
    start: int
    stop: int

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.narrow(self.dim, self.start, self.stop - self.start)


@dataclass
class UnitGroup:
    """Units of one kind in one place (e.g. the heads of block 2).

    units[u]:     the weight-matrix slices unit u owns (scored; they count in the budget)
    followers[u]: its bias slices (pruned with it, not scored)
    collapse:     parameters pruned when every unit of the group is (see the module doc)
    """

    name: str
    kind: str
    units: list[list[Slice]]
    followers: list[list[Slice]] = field(default_factory=list)
    collapse: list[str] = field(default_factory=list)


def _linear_parts(prefix: str, module: torch.nn.Module) -> tuple[str, str | None]:
    if isinstance(module, LowRankLinear):
        raise UserError(f"{prefix} is factorized; heads, ffn and blocks prune dense layers "
                        "(use method lowrank for factorized ones)")
    return f"{prefix}.weight", (f"{prefix}.bias" if module.bias is not None else None)


class UnitMap:
    """The units of `kinds` in `model`, and the conversions between unit masks, parameter
    masks and virtual score matrices."""

    def __init__(self, model: TransformerLM, kinds: Sequence[str]) -> None:
        kinds = list(kinds)
        for kind in kinds:
            if kind not in KINDS:
                raise UserError(f"unknown structure '{kind}'; known: {', '.join(KINDS)}")
        if "blocks" in kinds and len(kinds) > 1:
            raise UserError("structures: blocks cannot be mixed with heads / ffn / rank in one "
                            "run (a block whose heads and units are all pruned is removed "
                            "anyway); use [blocks] alone or [heads, ffn]")
        if not kinds:
            raise UserError("structures is empty; use heads, ffn, blocks or rank")
        self.model = model
        self.params = dict(model.named_parameters())
        self.groups: list[UnitGroup] = []
        for i, block in enumerate(model.layers):
            if "blocks" in kinds:
                self._add_block(i, block)
                continue
            if "heads" in kinds and block.attention is not None:
                self._add_heads(i, block)
            if "ffn" in kinds and block.ffn is not None:
                self._add_ffn(i, block)
            if "rank" in kinds:
                self._add_ranks(i, block)
        if not self.groups:
            raise UserError(f"the model has no {' / '.join(kinds)} units to prune"
                            + ("; factorize it first (method lowrank)" if kinds == ["rank"] else ""))
        self._sizes = {g.name: sum(self._numel(s) for s in g.units[0]) for g in self.groups}

    # -- building ------------------------------------------------------------------------------
    def _numel(self, piece: Slice) -> int:
        shape = list(self.params[piece.param].shape)
        shape[piece.dim] = piece.stop - piece.start
        return int(torch.tensor(shape).prod())

    def _add_heads(self, i: int, block) -> None:
        attention, d = block.attention, block.attention.head_dim
        prefix = f"layers.{i}.attention"
        projections = [_linear_parts(f"{prefix}.{p}", getattr(attention, p)) for p in "qkv"]
        out_weight, out_bias = _linear_parts(f"{prefix}.out", attention.out)
        units, followers = [], []
        for h in range(attention.heads):
            rows = slice(h * d, (h + 1) * d)
            units.append([Slice(w, 0, rows.start, rows.stop) for w, _ in projections]
                         + [Slice(out_weight, 1, rows.start, rows.stop)])
            followers.append([Slice(b, 0, rows.start, rows.stop) for _, b in projections if b])
        collapse = [n for n in (out_bias, f"layers.{i}.attention_norm.weight",
                                f"layers.{i}.attention_norm.bias") if n]
        self.groups.append(UnitGroup(f"{prefix}.heads", "heads", units, followers, collapse))

    def _add_ffn(self, i: int, block) -> None:
        prefix = f"layers.{i}.ffn"
        up_weight, up_bias = _linear_parts(f"{prefix}.up", block.ffn.up)
        down_weight, down_bias = _linear_parts(f"{prefix}.down", block.ffn.down)
        units, followers = [], []
        for j in range(block.ffn.up.out_features):
            units.append([Slice(up_weight, 0, j, j + 1), Slice(down_weight, 1, j, j + 1)])
            followers.append([Slice(up_bias, 0, j, j + 1)] if up_bias else [])
        collapse = [n for n in (down_bias, f"layers.{i}.ffn_norm.weight",
                                f"layers.{i}.ffn_norm.bias") if n]
        self.groups.append(UnitGroup(f"{prefix}.units", "ffn", units, followers, collapse))

    def _add_block(self, i: int, block) -> None:
        prefix = f"layers.{i}."
        names = [n for n in self.params if n.startswith(prefix)]
        weights = [n for n in names if self.params[n].dim() >= 2]
        rest = [n for n in names if self.params[n].dim() < 2]
        if not weights:
            return
        unit = [Slice(n, 0, 0, self.params[n].shape[0]) for n in weights]
        followers = [Slice(n, 0, 0, self.params[n].shape[0]) for n in rest]
        self.groups.append(UnitGroup(f"layers.{i}.block", "blocks", [unit], [followers], []))

    def _add_ranks(self, i: int, block) -> None:
        for name, module in block.named_modules():
            if isinstance(module, LowRankLinear) and module.rank > 0:
                prefix = f"layers.{i}.{name}"
                units = [[Slice(f"{prefix}.first.weight", 0, k, k + 1),
                          Slice(f"{prefix}.second.weight", 1, k, k + 1)]
                         for k in range(module.rank)]
                self.groups.append(UnitGroup(f"{prefix}.rank", "rank", units,
                                             [[] for _ in units], []))

    # -- views -----------------------------------------------------------------------------
    @property
    def scored_parameters(self) -> list[str]:
        """Weight matrices whose scores the units need, in model order."""
        wanted = {s.param for g in self.groups for unit in g.units for s in unit}
        return [n for n in self.params if n in wanted]

    @property
    def masked_parameters(self) -> list[str]:
        """Every parameter a unit mask touches (weights, followers, collapse), model order."""
        wanted = set(self.scored_parameters)
        for group in self.groups:
            wanted.update(s.param for f in group.followers for s in f)
            wanted.update(group.collapse)
        return [n for n in self.params if n in wanted]

    def scope_size(self) -> int:
        """Weights in all units: what the sparsity of a unit mask is measured over."""
        return sum(self._sizes[g.name] * len(g.units) for g in self.groups)

    def virtual_scores(self, scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-weight scores -> group name -> [units, weights per unit] (row u = unit u)."""
        out = {}
        for group in self.groups:
            rows = [torch.cat([s.take(scores[s.param]).reshape(-1).float() for s in unit])
                    for unit in group.units]
            out[group.name] = torch.stack(rows)
        return out

    def unit_keep_from_virtual(self, virtual_mask: Mapping[str, torch.Tensor]
                               ) -> dict[str, torch.Tensor]:
        """Virtual row masks -> group name -> keep [units] (a unit is kept or not, whole)."""
        return {name: rows.any(dim=1) for name, rows in virtual_mask.items()}

    def virtual_mask(self, keep: Mapping[str, torch.Tensor]) -> Mask:
        """Unit keep vectors -> a Mask over the virtual matrices (the `previous` of selection)."""
        return Mask({g.name: keep[g.name][:, None].expand(len(g.units), self._sizes[g.name])
                     .contiguous() for g in self.groups})

    def select(self, scores: Mapping[str, torch.Tensor], sparsity: float,
               previous: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Unit keep vectors pruning the lowest-scored units at `sparsity` of the unit weights
        (one global pool); with `previous` keep vectors, pruned units stay pruned."""
        virtual = self.virtual_scores(scores)
        prior = self.virtual_mask(previous) if previous is not None else None
        chosen = select_mask(virtual, sparsity, distribution="global", granularity="row",
                             previous=prior)
        return self.unit_keep_from_virtual(chosen)

    def expand(self, keep: Mapping[str, torch.Tensor]) -> Mask:
        """Unit keep vectors -> a Mask over `masked_parameters` (collapse applied)."""
        tensors = {n: torch.ones(self.params[n].shape, dtype=torch.bool)
                   for n in self.masked_parameters}
        for group in self.groups:
            kept = keep[group.name]
            for u in range(len(group.units)):
                if bool(kept[u]):
                    continue
                for piece in group.units[u] + group.followers[u]:
                    piece.take(tensors[piece.param]).fill_(False)
            if not bool(kept.any()):
                for name in group.collapse:
                    tensors[name].fill_(False)
        return Mask(tensors)

    def keep_from_mask(self, mask: Mask) -> dict[str, torch.Tensor]:
        """A parameter Mask -> unit keep vectors (a unit is kept when any weight it owns is)."""
        out = {}
        for group in self.groups:
            out[group.name] = torch.tensor([any(bool(s.take(mask[s.param]).any()) for s in unit)
                                            for unit in group.units])
        return out

    def all_kept(self) -> dict[str, torch.Tensor]:
        return {g.name: torch.ones(len(g.units), dtype=torch.bool) for g in self.groups}
