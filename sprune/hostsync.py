"""Reading tensor values without stalling an accelerator.

Reading a tensor's value on the host (`.item()`, `int(t)`, `float(t)`, `bool(t)`, `if t:`,
`.tolist()`, boolean indexing) waits for every kernel queued before it when the tensor lives
on a GPU: a host synchronisation, after which the GPU idles until the host has queued more
work. The training step makes none outside logging steps (`bench/train_step.py` counts
them). Code that has to look at values, such as input checks, reads them only where they
are in host memory (`in_host_memory`), inside `host_read()`:

    if in_host_memory(lengths):
        with host_read():
            shortest = int(lengths.min())

Such a read waits for nothing. `host_read` names the region for the profiler
(`HOST_READ`), so a benchmark on a CPU, where every tensor is in host memory, tells these
reads (skipped on an accelerator) from the ones that would stall one.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import torch

HOST_READ = "sprune::host_read"
_state = threading.local()


def in_host_memory(*tensors: torch.Tensor | None) -> bool:
    """True when every given tensor (None ignored) is in host (CPU) memory."""
    return all(t.device.type == "cpu" for t in tensors if t is not None)


@contextmanager
def host_read() -> Iterator[None]:
    """Mark reads of host-memory tensors (see the module docstring)."""
    with torch.profiler.record_function(HOST_READ):
        _state.depth = getattr(_state, "depth", 0) + 1
        try:
            yield
        finally:
            _state.depth -= 1


def inside_host_read() -> bool:
    """Whether this thread is inside `host_read()` now."""
    return getattr(_state, "depth", 0) > 0
