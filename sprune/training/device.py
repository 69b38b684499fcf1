"""Where a run computes: the device from the config (and the process's GPU), batches moved there."""
from __future__ import annotations

from typing import Any

import torch

from sprune.errors import UserError
from sprune.training import distributed


def resolve_device(name: str) -> torch.device:
    """`auto` | `cpu` | `cuda` | `cuda:N` -> a device. In a distributed run on GPUs, `auto`
    and `cuda` mean this process's GPU (LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but no GPU is visible; use device: cpu")
    world = distributed.current()
    if name == "cuda" and world.world_size > 1:
        return torch.device("cuda", world.local_rank % torch.cuda.device_count())
    return torch.device(name)


def move_to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def batch_size_of(batch: Any) -> int:
    """Number of examples in a collated batch: dim 0 of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    values = batch.values() if isinstance(batch, dict) else batch
    for v in values:
        if isinstance(v, torch.Tensor):
            return int(v.shape[0])
    raise TypeError("cannot tell the batch size: the batch holds no tensor")
