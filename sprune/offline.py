"""Import third-party stacks (espnet, s3prl) without touching the network.

espnet's text frontends import g2p_en, whose import calls `nltk.download` for the data it
lacks (cmudict and a POS tagger). espnet2's task modules import those frontends, and s3prl's
hub imports espnet's upstream, so `import_s3prl()` or `import espnet2.tasks.asr` tried the
network three times. Offline that only costs time; on a firewalled host each try waits for
its timeout. sprune uses none of these frontends (phonemes come from espeak-ng), so while it
imports such a stack `nltk.download` does nothing. A frontend that later needs the data
fails with nltk's own LookupError, which names the resource and how to install it.
"""
from __future__ import annotations

import contextlib
import importlib
from types import ModuleType
from typing import Iterator


def _no_download(*args: object, **kwargs: object) -> bool:
    return False   # what nltk.download returns when it could not fetch


@contextlib.contextmanager
def no_nltk_downloads() -> Iterator[None]:
    """Within the block, `nltk.download(...)` returns False at once (no-op without nltk)."""
    try:
        import nltk
    except ImportError:
        yield
        return
    saved = nltk.download
    nltk.download = _no_download
    try:
        yield
    finally:
        nltk.download = saved


def import_offline(module: str) -> ModuleType:
    """`importlib.import_module(module)` with `no_nltk_downloads()`."""
    with no_nltk_downloads():
        return importlib.import_module(module)
