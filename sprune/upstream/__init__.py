"""The pruning-aware upstream: one implementation of wav2vec 2.0, HuBERT and WavLM.

`UpstreamConfig` holds the architecture with per-layer sizes (so a physically shrunk model
is the same code with smaller numbers), `UpstreamModel` runs it, `load_upstream` reads
Hugging Face, fairseq (s3prl), torchaudio and sprune checkpoints from one spec string and
`save_upstream` writes sprune's format.
"""
from __future__ import annotations

from sprune.upstream.config import (PRESETS, EncoderLayerConfig, UpstreamConfig, preset_config,
                                    tiny_config)
from sprune.upstream.loaders import load_upstream, save_upstream
from sprune.upstream.model import UpstreamModel, UpstreamOutput

__all__ = [
    "PRESETS", "EncoderLayerConfig", "UpstreamConfig", "UpstreamModel", "UpstreamOutput",
    "load_upstream", "preset_config", "save_upstream", "tiny_config",
]
