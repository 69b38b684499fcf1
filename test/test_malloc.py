"""`sprune.malloc.keep_freed_memory`: on glibc a large tensor allocated again after a free
reuses pages already mapped (few page faults), and the switch turns it off."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from sprune.malloc import ENV, keep_freed_memory

GLIBC = platform.libc_ver()[0] == "glibc"

# Page faults of the third of three passes of wav2vec2's first conv layer over 10 s of audio
# (1 -> 512 channels, kernel 10, stride 5: a fresh 65 MB output each pass, freed in between).
PROBE = """
import resource, torch
from sprune.malloc import keep_freed_memory
applied = keep_freed_memory()
wav, weight = torch.randn(1, 1, 160000), torch.randn(512, 1, 10)
for _ in range(2):
    out = torch.nn.functional.conv1d(wav, weight, stride=5)
    del out
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
out = torch.nn.functional.conv1d(wav, weight, stride=5)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(setting: str) -> tuple[bool, int]:
    env = dict(os.environ, **{ENV: setting})
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_freed_memory_is_reused_without_page_faults():
    applied, faults = _probe("1")
    default_applied, default_faults = _probe("0")
    assert applied and not default_applied
    pages = 512 * 31999 * 4 // 4096
    assert default_faults > pages // 2     # glibc unmapped the freed block: fresh pages
    assert faults < pages // 20            # kept: the same pages again


def test_switch_turns_it_off(monkeypatch):
    monkeypatch.setenv(ENV, "0")
    assert keep_freed_memory() is False
