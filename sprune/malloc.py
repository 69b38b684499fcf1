"""Keep freed memory in the process on glibc, so large CPU activations are not page-faulted
in afresh on every forward.

glibc serves allocations above its mmap threshold (128 KiB, growing to 32 MiB at most) with
fresh mmap'd pages and unmaps them on free, so every large tensor is zero-filled page by
page again at each use: the conv encoder of wav2vec2 Base writes 65 MB for its first layer
on 10 s of audio. Measured on the 2-core build machine, one thread: an element-wise op over
that tensor took 44 ms into a fresh tensor and 6 ms into a reused one, and the dense Base
encoder's conv stack 902 -> 688 ms (whole forward 2110 -> 1936 ms) once glibc keeps freed
memory (`mallopt`: no mmap'd chunks, trimming only above 1 GiB), at 164 MB more peak RSS.
PyTorch's CPU tuning guide gets the same effect by preloading jemalloc or tcmalloc.
The cost is a heap that grows to its peak and stays there, with some fragmentation: 40
passes of a 64 MB element-wise op reached 903 MB peak RSS against 647 MB untuned (glibc's
aligned allocations do not always fit a freed chunk of the same size).

`sprune` commands and the `bench/` scripts call `keep_freed_memory()` at start-up;
SPRUNE_KEEP_FREED_MEMORY=0 turns it off (to compare, or where memory is tight).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

ENV = "SPRUNE_KEEP_FREED_MEMORY"
M_TRIM_THRESHOLD = -1   # glibc malloc.h parameter numbers
M_MMAP_MAX = -4
TRIM_ABOVE = 1 << 30    # bytes of free memory at the top of the heap before it is returned


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says. True when applied; False where the
    C library is not glibc, or SPRUNE_KEEP_FREED_MEMORY=0."""
    if os.environ.get(ENV, "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE))
