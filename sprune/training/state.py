"""Random-number state of a run: seeding, and the snapshot a resumable checkpoint keeps.

Every process of a distributed run draws the same random numbers (the same seed, the same
snapshot restored on resume: rank 0's), so dropout or random crops do not depend on the
process count and a run resumes at any count; the shards differ in their examples only.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The torch, CUDA, Python and NumPy generators' states (tensors and JSON values)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        # a run resumed on fewer or more GPUs than it was saved on keeps what fits
        count = min(len(cuda), torch.cuda.device_count())
        for device in range(count):
            torch.cuda.set_rng_state(cuda[device], device)
