"""Rename a foreign checkpoint's tensors to sprune's parameter names, by regex rules.

Each format (Hugging Face, fairseq, torchaudio) is a list of `Rule`s: a regex over the
checkpoint key and one or more target names (with regex groups); a rule may reshape the
tensor or split it (torchaudio's packed q/k/v). Keys matching an `ignore` pattern (heads,
quantizers, masking embeddings) are dropped; any other key without a rule is "unexpected".
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from torch import Tensor

Transform = Callable[[Tensor, int], Tensor]  # (tensor, index of the target) -> tensor


@dataclass(frozen=True)
class Rule:
    pattern: str
    targets: tuple[str, ...]
    transform: Transform | None = None

    def match(self, key: str) -> re.Match | None:
        return re.fullmatch(self.pattern, key)


def rule(pattern: str, *targets: str, transform: Transform | None = None) -> Rule:
    return Rule(pattern, targets, transform)


def flatten(tensor: Tensor, _index: int) -> Tensor:
    """[1, 1, K] weight-norm scales and [1, H, 1, 1] gate constants -> 1-D."""
    return tensor.reshape(-1)


def split3(tensor: Tensor, index: int) -> Tensor:
    """One third of a packed [3 * D, ...] q/k/v tensor."""
    return tensor.chunk(3, dim=0)[index]


@dataclass
class ConvertedWeights:
    """weights: sprune name -> tensor; origin: sprune name -> checkpoint key (for messages);
    unexpected: checkpoint keys that no rule maps and no ignore pattern drops."""

    weights: dict[str, Tensor] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)


def convert_keys(state: Mapping[str, Tensor], rules: Sequence[Rule],
                 ignore: Iterable[str] = ()) -> ConvertedWeights:
    """Apply the first matching rule to every key of `state`."""
    ignore = [re.compile(p) for p in ignore]
    out = ConvertedWeights()
    for key, tensor in state.items():
        for candidate in rules:
            match = candidate.match(key)
            if match is None:
                continue
            for index, target in enumerate(candidate.targets):
                name = match.expand(target)
                value = candidate.transform(tensor, index) if candidate.transform else tensor
                out.weights[name] = value
                out.origin[name] = key
            break
        else:
            if not any(p.fullmatch(key) for p in ignore):
                out.unexpected.append(key)
    return out


# Rules shared by the formats whose transformer layers are named like Hugging Face's.
LAYER = r"(\d+)"
WEIGHT_OR_BIAS = r"(weight|bias)"


def transformer_layer_rules(src: str, dst: str = r"encoder.layers.\1") -> list[Rule]:
    """Rules for `{src}.{i}.{layer_norm,feed_forward,final_layer_norm,attention.*_proj}`."""
    s = re.escape(src) + r"\." + LAYER
    return [
        rule(rf"{s}\.attention\.(q_proj|k_proj|v_proj|out_proj)\.{WEIGHT_OR_BIAS}",
             rf"{dst}.attention.\2.\3"),
        rule(rf"{s}\.attention\.gru_rel_pos_linear\.{WEIGHT_OR_BIAS}",
             rf"{dst}.attention.gate.linear.\2"),
        rule(rf"{s}\.attention\.gru_rel_pos_const", rf"{dst}.attention.gate.const",
             transform=flatten),
        rule(rf"{s}\.(layer_norm|final_layer_norm)\.{WEIGHT_OR_BIAS}", rf"{dst}.\2.\3"),
        rule(rf"{s}\.feed_forward\.(intermediate_dense|output_dense)\.{WEIGHT_OR_BIAS}",
             rf"{dst}.feed_forward.\2.\3"),
    ]


def pos_conv_rules(src: str) -> list[Rule]:
    """Weight-norm positional conv, old (`weight_g/_v`) and parametrized (`original0/1`)."""
    s = re.escape(src)
    return [
        rule(rf"{s}\.(weight_g|parametrizations\.weight\.original0)", "encoder.pos_conv.weight_g",
             transform=flatten),
        rule(rf"{s}\.(weight_v|parametrizations\.weight\.original1)",
             "encoder.pos_conv.weight_v"),
        rule(rf"{s}\.bias", "encoder.pos_conv.bias"),
    ]
