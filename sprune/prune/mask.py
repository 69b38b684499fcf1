"""Masks are data: a `Mask` maps parameter names to boolean tensors (True = weight kept).

A mask saves to safetensors (bool stored as uint8) with a JSON sparsity report beside it,
loads back, reports sparsity per parameter, per layer, per group and overall, and combines
with other masks (IOU, union, intersection). It knows nothing about how it was found.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn

from sprune.errors import UserError
from sprune.io import atomic_path, atomic_write_text

MASK_FILE = "mask.safetensors"
FORMAT = "sprune-mask"
FORMAT_VERSION = 1

_LAYER_RE = re.compile(r"^(.*?(?:^|\.)layers\.\d+)\.")


def named_tensors(params: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The named tensors of a model (its `named_parameters()`) or of a name -> tensor mapping."""
    if isinstance(params, nn.Module):
        return dict(params.named_parameters())
    return dict(params)


def layer_of(name: str) -> str | None:
    """The `...layers.{i}` prefix of a parameter name, or None when it is in no numbered layer.

    `encoder.transformer.layers.3.attention.q.weight` -> `encoder.transformer.layers.3`;
    `conv_layers.3.weight` is not a transformer layer (the prefix must follow a dot) -> None.
    """
    match = _LAYER_RE.match(name)
    return match.group(1) if match else None


def _counts(kept: int, total: int) -> dict[str, float | int]:
    return {"kept": kept, "total": total, "sparsity": 1.0 - kept / total if total else 0.0}


class Mask(Mapping[str, torch.Tensor]):
    """Parameter name -> bool tensor of the parameter's shape; True marks a kept weight.

    Keys keep their insertion order (it is the order used to break ties when selecting).
    Tensors are stored on the CPU.
    """

    def __init__(self, tensors: Mapping[str, torch.Tensor]) -> None:
        self._tensors: dict[str, torch.Tensor] = {}
        for name, tensor in tensors.items():
            if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.bool:
                raise TypeError(f"mask entry '{name}' must be a bool tensor, got "
                                f"{getattr(tensor, 'dtype', type(tensor).__name__)}")
            self._tensors[name] = tensor.detach().to("cpu")

    # -- Mapping -----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mask):
            return NotImplemented
        return list(self) == list(other) and all(
            self[n].shape == other[n].shape and torch.equal(self[n], other[n]) for n in self)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Mask({len(self)} parameters, sparsity {self.sparsity():.4f})"

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def ones_like(cls, params: nn.Module | Mapping[str, torch.Tensor],
                  names: Sequence[str] | None = None) -> "Mask":
        """A mask keeping every weight of `params` (restricted to `names` when given)."""
        tensors = named_tensors(params)
        chosen = list(tensors) if names is None else list(names)
        missing = [n for n in chosen if n not in tensors]
        if missing:
            raise UserError(f"parameter '{missing[0]}' is not in the model; check the scope")
        return cls({n: torch.ones(tensors[n].shape, dtype=torch.bool) for n in chosen})

    @classmethod
    def from_nonzero(cls, params: nn.Module | Mapping[str, torch.Tensor],
                     names: Sequence[str] | None = None) -> "Mask":
        """The mask a model actually has: True where its weights are non-zero."""
        tensors = named_tensors(params)
        chosen = list(tensors) if names is None else list(names)
        return cls({n: tensors[n].detach().ne(0).cpu() for n in chosen})

    # -- sparsity ----------------------------------------------------------------------------
    def num_kept(self) -> int:
        return sum(int(t.count_nonzero()) for t in self._tensors.values())

    def numel(self) -> int:
        return sum(t.numel() for t in self._tensors.values())

    def sparsity(self) -> float:
        """Fraction of pruned weights over all masked parameters (0.0 for an empty mask)."""
        total = self.numel()
        return 1.0 - self.num_kept() / total if total else 0.0

    def sparsity_per_parameter(self) -> dict[str, float]:
        return {n: 1.0 - int(t.count_nonzero()) / t.numel() if t.numel() else 0.0
                for n, t in self._tensors.items()}

    def _pooled(self, key_of: Callable[[str], str | None]) -> dict[str, dict]:
        pooled: dict[str, list[int]] = {}
        for name, tensor in self._tensors.items():
            key = key_of(name)
            if key is None:
                continue
            kept_total = pooled.setdefault(key, [0, 0])
            kept_total[0] += int(tensor.count_nonzero())
            kept_total[1] += tensor.numel()
        return {key: _counts(kept, total) for key, (kept, total) in pooled.items()}

    def sparsity_per_layer(self, prefix: Callable[[str], str | None] = layer_of
                           ) -> dict[str, float]:
        """Sparsity pooled over the parameters sharing `prefix(name)`; by default the
        `layers.{i}` prefix. Parameters whose prefix is None are pooled under "other"."""
        pooled = self._pooled(lambda n: prefix(n) or "other")
        return {key: float(c["sparsity"]) for key, c in pooled.items()}

    def sparsity_per_group(self, groups: Mapping[str, Sequence[str]]) -> dict[str, float]:
        """Sparsity of each named group (group -> parameter names), counting only the group's
        parameters that are in this mask; groups with none of them are left out."""
        out = {}
        for group, names in groups.items():
            inside = [n for n in names if n in self._tensors]
            if inside:
                kept = sum(int(self._tensors[n].count_nonzero()) for n in inside)
                total = sum(self._tensors[n].numel() for n in inside)
                out[group] = float(_counts(kept, total)["sparsity"])
        return out

    def report(self, groups: Mapping[str, Sequence[str]] | None = None,
               prefix: Callable[[str], str | None] = layer_of) -> dict:
        """The JSON-ready sparsity report: overall, per layer, per group, per parameter."""
        per_parameter = {}
        for name, tensor in self._tensors.items():
            entry = {"shape": list(tensor.shape)}
            entry.update(_counts(int(tensor.count_nonzero()), tensor.numel()))
            per_parameter[name] = entry
        per_group = {}
        for group, names in (groups or {}).items():
            inside = [n for n in names if n in self._tensors]
            if inside:
                per_group[group] = _counts(sum(per_parameter[n]["kept"] for n in inside),
                                           sum(per_parameter[n]["total"] for n in inside))
        return {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "overall": _counts(self.num_kept(), self.numel()),
            "per_layer": self._pooled(lambda n: prefix(n) or "other"),
            "per_group": per_group,
            "per_parameter": per_parameter,
        }

    # -- set operations ----------------------------------------------------------------------
    def _check_same_layout(self, other: "Mask", what: str) -> None:
        for name in self:
            if name not in other:
                raise UserError(f"cannot compute {what}: parameter '{name}' is in one mask "
                                "only; compare masks of the same model and scope")
            if self[name].shape != other[name].shape:
                raise UserError(f"cannot compute {what}: parameter '{name}' has shape "
                                f"{list(self[name].shape)} in one mask and "
                                f"{list(other[name].shape)} in the other; compare masks of "
                                "the same model")
        for name in other:
            if name not in self:
                raise UserError(f"cannot compute {what}: parameter '{name}' is in one mask "
                                "only; compare masks of the same model and scope")

    def union(self, other: "Mask") -> "Mask":
        """Kept in either mask."""
        self._check_same_layout(other, "the union")
        return Mask({n: self[n] | other[n] for n in self})

    def intersection(self, other: "Mask") -> "Mask":
        """Kept in both masks."""
        self._check_same_layout(other, "the intersection")
        return Mask({n: self[n] & other[n] for n in self})

    def iou(self, other: "Mask") -> float:
        """Intersection over union of the kept weights (1.0 when both keep nothing)."""
        self._check_same_layout(other, "the IOU")
        both = sum(int((self[n] & other[n]).count_nonzero()) for n in self)
        either = sum(int((self[n] | other[n]).count_nonzero()) for n in self)
        return both / either if either else 1.0

    # -- fitting a model ---------------------------------------------------------------------
    def check_fits(self, params: nn.Module | Mapping[str, torch.Tensor]) -> None:
        """Raise a UserError naming the first mask entry the model lacks or shapes differently."""
        tensors = named_tensors(params)
        for name, tensor in self._tensors.items():
            if name not in tensors:
                raise UserError(f"mask saved for another model: parameter '{name}' is not in "
                                "this model; use the mask made for this model")
            if tuple(tensors[name].shape) != tuple(tensor.shape):
                raise UserError(f"mask saved for another model: parameter '{name}' has shape "
                                f"{list(tensors[name].shape)} in the model but "
                                f"{list(tensor.shape)} in the mask; use the mask made for "
                                "this model")

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike,
             groups: Mapping[str, Sequence[str]] | None = None) -> Path:
        """Write the mask and its JSON report; return the safetensors file written.

        `path` is a `.safetensors` file (the report goes beside it as `.json`) or a directory
        (written as `mask.safetensors` + `mask.json` inside it). Both writes are atomic.
        """
        from safetensors.torch import save_file

        tensor_path, report_path = _mask_paths(path)
        tensors = {n: t.to(torch.uint8).contiguous() for n, t in self._tensors.items()}
        metadata = {"format": FORMAT, "version": str(FORMAT_VERSION),
                    "order": json.dumps(list(self._tensors))}
        with atomic_path(tensor_path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        atomic_write_text(report_path, json.dumps(self.report(groups), indent=1) + "\n")
        return tensor_path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Mask":
        """Read a mask written by `save` (a `.safetensors` file or the directory holding one)."""
        from safetensors import safe_open

        tensor_path, _ = _mask_paths(path, creating=False)
        if not tensor_path.is_file():
            raise UserError(f"{tensor_path}: mask file not found; give a mask directory or "
                            "a .safetensors file written by sprune")
        try:
            with safe_open(str(tensor_path), framework="pt") as f:
                metadata = f.metadata() or {}
                raw = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as exc:  # safetensors raises several error types for bad files
            raise UserError(f"{tensor_path}: not a readable safetensors file ({exc}); "
                            "re-create the mask") from None
        if metadata.get("format") != FORMAT:
            raise UserError(f"{tensor_path}: not a sprune mask (no '{FORMAT}' metadata); "
                            "give a mask written by sprune")
        try:
            order = list(json.loads(metadata.get("order", "[]")))
        except (ValueError, TypeError):
            order = []  # the order only breaks ties; fall back to sorted names
        names = [n for n in order if n in raw] + sorted(n for n in raw if n not in order)
        tensors = {}
        for name in names:
            tensor = raw[name]
            if tensor.dtype != torch.uint8 or (tensor.numel() and int(tensor.max()) > 1):
                raise UserError(f"{tensor_path}: entry '{name}' is not a 0/1 uint8 mask; "
                                "re-create the mask")
            tensors[name] = tensor.bool()
        return cls(tensors)


def _mask_paths(path: str | os.PathLike, creating: bool = True) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix == ".safetensors":
        return path, path.with_suffix(".json")
    if not creating and path.is_file():
        return path, path.with_suffix(".json")
    return path / MASK_FILE, path / "mask.json"
