"""Which parameters may be pruned: a preset, plus include / exclude patterns.

A pattern is matched (shell glob, `fnmatch`) against the model's **group names** when the
model has named groups (group name -> parameter names; the upstream exposes
`conv_extractor`, `feature_projection`, `pos_conv`, `layers.{i}.attention.{q,k,v,out}`,
`layers.{i}.ffn.{in,out}`, `transformer`, `all`) and against **parameter names**; it selects
the union of both. A pattern that selects nothing is an error (it is almost always a typo).

Presets (paper 001 prunes the transformer's weight matrices; the other two widen that):

* `transformer` (default): weight matrices of the transformer layers' attention (q, k, v, out)
  and feed-forward (in, out) projections; no biases, no LayerNorm.
* `transformer+extractor`: the above plus the convolutional feature extractor's kernels.
* `all`: the model's `all` group (upstream: extractor, feature projection, positional
  convolution and transformer weights); for a model without groups, every parameter with two
  or more dimensions. Still no biases or norms.

Result = (preset ∪ include) − exclude, in the model's parameter order.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn

from sprune.errors import UserError
from sprune.prune.mask import named_tensors

Groups = Mapping[str, Sequence[str]]

_TRANSFORMER_GROUPS = ("layers.*.attention.*", "layers.*.ffn.*")
PRESETS: dict[str, tuple[str, ...] | None] = {
    "transformer": _TRANSFORMER_GROUPS,
    "transformer+extractor": _TRANSFORMER_GROUPS + ("conv_extractor",),
    "all": None,  # the `all` group, else every parameter with ndim >= 2
}


@dataclass
class Scope:
    """A pruning scope as written in a config: `preset` (or None) plus patterns."""

    preset: str | None = "transformer"
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)

    def resolve(self, params: nn.Module | Mapping[str, torch.Tensor],
                groups: Groups | None = None) -> list[str]:
        return resolve_scope(params, preset=self.preset, include=self.include,
                             exclude=self.exclude, groups=groups)


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def match_pattern(pattern: str, names: Sequence[str], groups: Groups | None) -> set[str]:
    """Parameter names selected by `pattern`: via matching group names and parameter names."""
    selected = set(fnmatch.filter(names, pattern))
    for group in fnmatch.filter(list(groups or {}), pattern):
        selected.update(groups[group])  # type: ignore[index]
    return selected


def _known(groups: Groups | None) -> str:
    if not groups:
        return "the model defines no parameter groups"
    shown = [g for g in groups if not g.startswith("layers.")]
    if any(g.startswith("layers.") for g in groups):
        shown.append("layers.{i}.attention.{q,k,v,out}, layers.{i}.ffn.{in,out}")
    return "known groups: " + ", ".join(shown)


def _select(pattern: str, names: Sequence[str], groups: Groups | None, what: str) -> set[str]:
    selected = match_pattern(pattern, names, groups)
    if not selected:
        kind = "pattern" if _is_glob(pattern) else "group or parameter"
        raise UserError(f"{what} {kind} '{pattern}' matches no parameter of the model; "
                        f"{_known(groups)}")
    return selected


def resolve_scope(params: nn.Module | Mapping[str, torch.Tensor], *,
                  preset: str | None = "transformer", include: Sequence[str] = (),
                  exclude: Sequence[str] = (), groups: Groups | None = None) -> list[str]:
    """Names of the prunable parameters, in model order (see the module docstring)."""
    tensors = named_tensors(params)
    names = list(tensors)
    if groups is not None:
        for group, members in groups.items():
            for member in members:
                if member not in tensors:
                    raise ValueError(f"group '{group}' names '{member}', which is not a "
                                     "parameter of the model")
    chosen: set[str] = set()
    if preset is not None:
        if preset not in PRESETS:
            raise UserError(f"unknown pruning scope preset '{preset}'; known: "
                            f"{', '.join(PRESETS)}")
        patterns = PRESETS[preset]
        if patterns is None:
            chosen = set(groups["all"]) if groups and "all" in groups else set(names)
        else:
            for pattern in patterns:
                if not fnmatch.filter(list(groups or {}), pattern):
                    raise UserError(f"scope preset '{preset}' needs parameter group "
                                    f"'{pattern}', which this model lacks ({_known(groups)}); "
                                    "use include/exclude patterns over parameter names")
                chosen |= match_pattern(pattern, [], groups)
        chosen = {n for n in chosen if tensors[n].dim() >= 2}
    for pattern in include:
        chosen |= _select(pattern, names, groups, "include")
    for pattern in exclude:
        chosen -= _select(pattern, names, groups, "exclude")
    if not chosen:
        raise UserError("the pruning scope selects no parameter; check the scope preset and "
                        "include/exclude patterns")
    return [n for n in names if n in chosen]
