"""Factorized layers (paper 002): every block Linear W [out, in] becomes U [out, r] V [r, in]
from its truncated SVD, and rank components become units the mask engine prunes a few at a
time (`sprune.lm.structure`, kind `rank`), so one fine-tuning run passes through many sizes.

Initial rank (paper 002 leaves it open; our reading): `neutral`, the largest r with
r (in + out) <= in * out, so factorizing does not grow the model and pruning starts from the
dense size; `full` = min(in, out) reproduces every layer exactly (twice the weights of a square
layer); or a number (capped at min(in, out)).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from torch import nn

from sprune.errors import UserError
from sprune.lm.config import BLOCK_LINEARS
from sprune.lm.layers import LowRankLinear, neutral_rank
from sprune.lm.model import TransformerLM


def initial_rank(spec: str | int, linear: nn.Linear) -> int:
    """The rank a dense `linear` is factorized to under `spec` (neutral | full | int)."""
    full = min(linear.in_features, linear.out_features)
    if spec == "neutral":
        return min(full, neutral_rank(linear.in_features, linear.out_features))
    if spec == "full":
        return full
    if isinstance(spec, int) and not isinstance(spec, bool) and spec >= 1:
        return min(full, spec)
    raise UserError(f"initial_rank {spec!r}: use neutral, full or a whole number >= 1")


def dense_linears(model: TransformerLM, include: Sequence[str] | None = None) -> list[str]:
    """Module paths (`layers.{i}.attention.q`, ...) of the block Linears still dense;
    `include` restricts them to these suffixes of BLOCK_LINEARS (e.g. ["ffn.up"])."""
    suffixes = tuple(include) if include else BLOCK_LINEARS
    for suffix in suffixes:
        if suffix not in BLOCK_LINEARS:
            raise UserError(f"lowrank layer '{suffix}' is not a block Linear; known: "
                            f"{', '.join(BLOCK_LINEARS)}")
    modules = dict(model.named_modules())
    return [f"layers.{i}.{s}" for i in range(len(model.layers)) for s in suffixes
            if isinstance(modules.get(f"layers.{i}.{s}"), nn.Linear)]


def factorize(model: TransformerLM, rank: str | int = "neutral",
              include: Sequence[str] | None = None) -> TransformerLM:
    """A copy of `model` whose dense block Linears (or those of `include`) are replaced by
    their truncated SVD at `initial_rank(rank)`; other weights are copied unchanged."""
    names = dense_linears(model, include)
    if not names:
        raise UserError("the LM has no dense block Linear left to factorize")
    modules = dict(model.named_modules())
    ranks = dict(model.config.ranks)
    factors = {}
    for name in names:
        ranks[name] = initial_rank(rank, modules[name])
        factors[name] = LowRankLinear.from_linear(modules[name], ranks[name])
    config = dataclasses.replace(model.config, ranks=ranks)
    out = TransformerLM(config).to(model.output.weight.device)
    state = {k: v for k, v in model.state_dict().items()
             if not any(k.startswith(f"{n}.") for n in names)}
    for name, layer in factors.items():
        state.update({f"{name}.{k}": v for k, v in layer.state_dict().items()})
    out.load_state_dict(state)
    out.train(model.training)
    return out
