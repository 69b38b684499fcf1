"""Span masks over model frames, as in wav2vec 2.0 / HuBERT pretraining.

Every valid frame that leaves room for a whole span starts one with probability `prob`
(HuBERT: 0.08), and a span masks `span` consecutive frames (HuBERT: 10); spans may overlap.
Away from the edges a frame is therefore masked with probability 1 - (1 - prob) ** span
(about 0.57 for HuBERT's values), see `expected_mask_fraction`. Each sequence gets at least
one span, so every sequence has frames to predict. Padding frames are never masked.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def expected_mask_fraction(prob: float, span: int) -> float:
    """Probability that a frame far from the sequence edges is masked."""
    return 1.0 - (1.0 - prob) ** span


def span_mask(frame_lengths: Tensor, num_frames: int, prob: float, span: int,
              generator: torch.Generator | None = None) -> Tensor:
    """Random span mask: frame_lengths [B] valid frames -> [B, num_frames] bool (True = masked).

    A sequence shorter than `span` is masked whole (its only span starts at frame 0).
    """
    if not 0.0 <= prob <= 1.0 or span < 1:
        raise ValueError(f"mask prob must be in [0, 1] and span >= 1, got {prob}, {span}")
    batch = frame_lengths.shape[0]
    device = frame_lengths.device
    frames = torch.arange(num_frames, device=device)[None, :]
    last_start = (frame_lengths - span).clamp(min=0)[:, None]          # [B, 1]
    may_start = frames <= last_start
    draws = torch.rand(batch, num_frames, generator=generator).to(device)
    starts = (draws < prob) & may_start
    # At least one span per sequence: the first allowed start by a seeded draw.
    forced = (torch.rand(batch, generator=generator).to(device) * (last_start[:, 0] + 1)).long()
    no_start = ~starts.any(1)
    starts[no_start, forced[no_start]] = True
    # Frame t is masked when a span starts at any of t - span + 1 .. t.
    padded = F.pad(starts.float().unsqueeze(1), (span - 1, 0))
    masked = F.max_pool1d(padded, kernel_size=span, stride=1).squeeze(1) > 0
    return masked & (frames < frame_lengths[:, None])
