"""MFCC frame features for HuBERT's first iteration, and their alignment to model frames.

HuBERT (Hsu et al. 2021) clusters 39-dimensional MFCC frames (13 coefficients, deltas and
delta-deltas; 25 ms windows every 10 ms, Kaldi's definition) to get its first targets. The
model runs at 50 Hz, so its frame i gets the label of the MFCC frame whose window has the same
centre: for the standard extractor (400-sample receptive field, 320-sample hop) that is MFCC
frame 2i, whose 400-sample window is exactly the conv frame's.
"""
from __future__ import annotations

import torch
import torchaudio
from torch import Tensor

MFCC_SAMPLE_RATE = 16000
MFCC_WINDOW = 400   # samples (25 ms)
MFCC_HOP = 160      # samples (10 ms)
NUM_CEPS = 13
FEATURE_DIM = 3 * NUM_CEPS
INT16_SCALE = 32768.0  # Kaldi computes MFCCs on 16-bit sample values


def mfcc_features(wav: Tensor) -> Tensor:
    """Kaldi MFCCs with deltas and delta-deltas of one 16 kHz waveform.

    wav: [T] float in [-1, 1], T >= 400 -> [F, 39], F = 1 + (T - 400) // 160.
    """
    if wav.dim() != 1 or wav.shape[0] < MFCC_WINDOW:
        raise ValueError(f"need a 1-D waveform of at least {MFCC_WINDOW} samples, "
                         f"got shape {tuple(wav.shape)}")
    mfcc = torchaudio.compliance.kaldi.mfcc(
        wav.float().unsqueeze(0) * INT16_SCALE, sample_frequency=MFCC_SAMPLE_RATE,
        frame_length=1000.0 * MFCC_WINDOW / MFCC_SAMPLE_RATE,
        frame_shift=1000.0 * MFCC_HOP / MFCC_SAMPLE_RATE, num_ceps=NUM_CEPS, use_energy=False,
        dither=0.0)                                                  # [F, 13]
    deltas = torchaudio.functional.compute_deltas(mfcc.T)            # [13, F]
    delta_deltas = torchaudio.functional.compute_deltas(deltas)
    return torch.cat([mfcc, deltas.T, delta_deltas.T], dim=1)        # [F, 39]


def mfcc_frame_indices(num_frames: int, receptive_field: int = 400, hop: int = 320) -> Tensor:
    """Index of the MFCC frame centred like each of `num_frames` model frames: [num_frames].

    Model frame i covers samples [i * hop, i * hop + receptive_field); MFCC frame j covers
    [160 j, 160 j + 400). Standard extractor: j = 2 i.
    """
    centres = torch.arange(num_frames, dtype=torch.float64) * hop + receptive_field / 2
    return torch.round((centres - MFCC_WINDOW / 2) / MFCC_HOP).clamp(min=0).long()


def labels_at_model_rate(mfcc_labels: Tensor, num_frames: int, receptive_field: int = 400,
                         hop: int = 320) -> Tensor:
    """Pick the label of the aligned MFCC frame for each model frame.

    mfcc_labels: [F] (100 Hz) -> [num_frames] (the model's rate, 50 Hz for hop 320).
    """
    index = mfcc_frame_indices(num_frames, receptive_field, hop)
    if num_frames and int(index[-1]) >= mfcc_labels.shape[0]:
        raise ValueError(f"{num_frames} model frames need MFCC frame {int(index[-1])} but only "
                         f"{mfcc_labels.shape[0]} exist; is the audio the same?")
    return mfcc_labels[index]
