"""HuBERT iteration-1 targets of a data dir: k-means units of MFCC frames at the model's rate.

    mfccs = dataset_mfccs(train_set)                        # utt -> [F, 39]
    codebook = fit_kmeans(sample_frames(mfccs, 100_000, seed=0), k=100, seed=0)
    units = frame_units(mfccs, codebook, upstream_config)   # utt -> [T'] int64 at 50 Hz
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from sprune.data.dataset import AudioDataset, collate_audio
from sprune.ssl.features import labels_at_model_rate, mfcc_features
from sprune.ssl.kmeans import Codebook
from sprune.upstream.config import UpstreamConfig

IGNORE_UNIT = -100  # padding value of unit targets (F.cross_entropy's ignore_index)


def dataset_mfccs(dataset: AudioDataset, progress: bool = False) -> dict[str, Tensor]:
    """MFCC + deltas of every utterance: utt id -> [F, 39]."""
    out = {}
    for i in tqdm(range(len(dataset)), desc="mfcc", unit="utt", disable=not progress):
        item = dataset[i]
        out[item["utt"]] = mfcc_features(item["wav"])
    return out


def sample_frames(mfccs: dict[str, Tensor], max_frames: int, seed: int) -> Tensor:
    """Up to `max_frames` MFCC frames drawn without replacement (seeded): [N, 39]."""
    frames = torch.cat([mfccs[utt] for utt in sorted(mfccs)])
    if frames.shape[0] <= max_frames:
        return frames
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(frames.shape[0], generator=generator)[:max_frames]
    return frames[keep.sort().values]


def model_frames(num_samples: int, config: UpstreamConfig) -> int:
    """Frames the conv extractor of `config` gives for `num_samples` samples."""
    frames = num_samples
    for _, kernel, stride in config.conv_layers:
        frames = max(0, (frames - kernel) // stride + 1)
    return frames


def frame_units(dataset: AudioDataset, mfccs: dict[str, Tensor], codebook: Codebook,
                config: UpstreamConfig) -> dict[str, Tensor]:
    """Unit of each model frame of each utterance: utt id -> [T'] int64 (T' from its length)."""
    units = {}
    for i, utt in enumerate(dataset.utts):
        num_samples = dataset[i]["wav"].shape[0]
        labels = codebook.predict(mfccs[utt])
        units[utt] = labels_at_model_rate(labels, model_frames(num_samples, config),
                                          config.receptive_field, config.downsample_rate)
    return units


class UnitDataset(Dataset):
    """An `AudioDataset` whose items also hold `units` [T'] int64 (the model-rate targets)."""

    def __init__(self, audio: AudioDataset, units: dict[str, Tensor]) -> None:
        missing = [utt for utt in audio.utts if utt not in units]
        if missing:
            raise ValueError(f"no units for utterance '{missing[0]}'")
        self.audio = audio
        self.units = units

    def __len__(self) -> int:
        return len(self.audio)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.audio[i]
        item["units"] = self.units[item["utt"]]
        return item


def collate_units(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """`collate_audio` plus `units` [B, T'_max] int64 padded with IGNORE_UNIT."""
    units = [item["units"] for item in items]
    batch = collate_audio([{k: v for k, v in item.items() if k != "units"} for item in items])
    padded = torch.full((len(units), max(len(u) for u in units)), IGNORE_UNIT, dtype=torch.long)
    for row, u in enumerate(units):
        padded[row, :len(u)] = u
    batch["units"] = padded
    return batch


class CropCollate:
    """Collate without padding: every utterance of a batch is cut to the batch's shortest
    (at most `max_samples`) at a random offset (torch's global RNG) that is a whole number of
    model frames, and its units are cut to match. Same keys as `collate_units`."""

    def __init__(self, config: UpstreamConfig, max_samples: int) -> None:
        if max_samples < config.receptive_field:
            raise ValueError(f"crops of {max_samples} samples are shorter than the receptive "
                             f"field ({config.receptive_field})")
        self.config = config
        self.max_samples = max_samples

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        hop = self.config.downsample_rate
        length = min(self.max_samples, min(len(item["wav"]) for item in items))
        frames = model_frames(length, self.config)
        cropped = []
        for item in items:
            offset = int(torch.randint((len(item["wav"]) - length) // hop + 1, ()))
            cropped.append({**item, "wav": item["wav"][offset * hop:offset * hop + length],
                            "units": item["units"][offset:offset + frames]})
        return collate_units(cropped)
