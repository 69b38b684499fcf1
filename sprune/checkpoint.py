"""Save nested training state (model, optimizer, RNGs, callback state) as safetensors + JSON.

`torch.save` pickles, and loading pickles is unsafe, so checkpoints are split: every tensor goes
into one `tensors.safetensors` file under a generated key, and the rest of the tree (numbers,
strings, lists, dicts with any keys, tuples) goes into `state.json` with `{"__tensor__": key}`
placeholders. Loading rebuilds the same tree, including int dict keys (optimizer state) and
tuples (Adam betas).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sprune.errors import UserError
from sprune.io import atomic_dir

TENSORS = "tensors.safetensors"
STATE = "state.json"


def flatten_state(tree: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split a nested state into (tensors by key, JSON-able skeleton)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(node: Any, path: str) -> Any:
        if isinstance(node, torch.Tensor):
            key = path or "root"
            tensors[key] = node.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(node, dict):
            if all(isinstance(k, str) for k in node) and "__tensor__" not in node:
                return {k: walk(v, f"{path}.{k}" if path else k) for k, v in node.items()}
            return {"__items__": [[k, walk(v, f"{path}.{k}" if path else str(k))]
                                  for k, v in node.items()]}
        if isinstance(node, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(node)]}
        if isinstance(node, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store {type(node).__name__} at '{path}' in a checkpoint")

    return tensors, walk(tree, "")


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    """Inverse of `flatten_state`."""
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "__tensor__" in node:
                return tensors[node["__tensor__"]]
            if "__items__" in node:
                return {k: walk(v) for k, v in node["__items__"]}
            if "__tuple__" in node:
                return tuple(walk(v) for v in node["__tuple__"])
            return {k: walk(v) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(skeleton)


def save_state(path: str | os.PathLike, tree: Any) -> None:
    """Write a state tree to directory `path` atomically."""
    tensors, skeleton = flatten_state(tree)
    with atomic_dir(path) as tmp:
        # safetensors refuses tensors that share memory; clone the rare aliased ones.
        seen: set[int] = set()
        for key, t in tensors.items():
            if t.data_ptr() in seen and t.numel():
                tensors[key] = t.clone()
            seen.add(t.data_ptr())
        save_file(tensors, str(Path(tmp) / TENSORS))
        (Path(tmp) / STATE).write_text(json.dumps(skeleton), encoding="utf-8")


def load_state(path: str | os.PathLike) -> Any:
    """Read a state tree written by `save_state`."""
    path = Path(path)
    if not (path / STATE).is_file() or not (path / TENSORS).is_file():
        raise UserError(f"{path} is not a sprune checkpoint (needs {STATE} and {TENSORS})")
    skeleton = json.loads((path / STATE).read_text(encoding="utf-8"))
    return unflatten_state(load_file(str(path / TENSORS)), skeleton)
