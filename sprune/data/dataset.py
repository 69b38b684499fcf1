"""Torch datasets over Kaldi data dirs, and the padding collate function.

An item is a dict: `wav` float32 [T] (16 kHz mono), `utt` id, and the labels asked for
(`intent` index, `lang` tag, `text`). `collate_audio` pads a list of items into

    wavs     [B, T_max]  float32, zero-padded
    lengths  [B]         int64, samples before padding
    <label>  [B]         int64 for integer labels; lists for strings (utt, lang, text)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from sprune.data.audio import audio_info, load_mono_16k
from sprune.data.datadir import DataDir
from sprune.errors import UserError

MIN_SAMPLES = 400  # receptive field of the wav2vec2 conv feature encoder at 16 kHz


class AudioDataset(Dataset):
    """Utterances of a data dir in utterance-id order.

    intents: the intent vocabulary (index = class id); required when `utt2intent` is used.
    preload: read every waveform once up front (small corpora) instead of on each access.
    """

    def __init__(self, data: DataDir, intents: Sequence[str] | None = None,
                 preload: bool = False) -> None:
        self.data = data
        self.utts = data.utt_ids
        self.intent_index = None
        if intents is not None:
            if data.utt2intent is None:
                raise UserError(f"{data.path or 'data dir'} has no utt2intent; intent tasks need one")
            self.intent_index = {name: i for i, name in enumerate(intents)}
            unknown = sorted(set(data.utt2intent.values()) - set(self.intent_index))
            if unknown:
                raise UserError(f"{data.path}/utt2intent: intent '{unknown[0]}' is not in the "
                                f"training intents ({', '.join(intents)})")
        self._cache: list[np.ndarray] | None = None
        if preload:
            self._cache = [self._read(u) for u in self.utts]

    def _read(self, utt: str) -> np.ndarray:
        wav = load_mono_16k(self.data.wav_scp[utt])
        if len(wav) < MIN_SAMPLES:
            raise UserError(f"{self.data.path}/wav.scp: '{utt}' has {len(wav)} samples, fewer than "
                            f"the model's receptive field ({MIN_SAMPLES}); filter it out with "
                            "`sprune data filter --min-seconds 0.1`")
        return wav

    def __len__(self) -> int:
        return len(self.utts)

    def subset(self, utt_ids: Sequence[str]) -> "AudioDataset":
        """The same dataset over `utt_ids` only (preloaded audio and intents kept)."""
        keep = set(utt_ids)
        part = object.__new__(AudioDataset)
        part.__dict__.update(self.__dict__)
        part.data = self.data.subset(keep)
        part.utts = part.data.utt_ids
        if self._cache is not None:
            index = {u: i for i, u in enumerate(self.utts)}
            part._cache = [self._cache[index[u]] for u in part.utts]
        return part

    def languages(self) -> list[str] | None:
        """The language tag of each utterance (utt2lang), or None without one."""
        tags = self.data.utt2lang
        return None if tags is None else [tags.get(u) for u in self.utts]

    def lengths(self) -> list[int] | None:
        """Samples per utterance when the audio is preloaded (else None: unknown without
        reading every file). The Trainer buckets batches by these."""
        return None if self._cache is None else [len(wav) for wav in self._cache]

    def length_sorted_batches(self, batch_size: int) -> list[list[int]]:
        """Index batches of similar-length utterances (shortest first, ties in utterance
        order) for evaluation and feature extraction, so little compute goes into padding;
        every utterance appears once. Lengths come from the preloaded audio, else from the
        audio headers."""
        lengths = self.lengths()
        if lengths is None:
            lengths = [audio_info(self.data.wav_scp[utt]).frames for utt in self.utts]
        order = sorted(range(len(self)), key=lambda i: lengths[i])
        return [order[b:b + batch_size] for b in range(0, len(order), batch_size)]

    def __getitem__(self, i: int) -> dict[str, Any]:
        utt = self.utts[i]
        wav = self._cache[i] if self._cache is not None else self._read(utt)
        item: dict[str, Any] = {"wav": torch.from_numpy(wav), "utt": utt}
        if self.intent_index is not None:
            item["intent"] = self.intent_index[self.data.utt2intent[utt]]
        if self.data.utt2lang is not None:
            item["lang"] = self.data.utt2lang[utt]
        if self.data.text is not None:
            item["text"] = self.data.text[utt]
        return item


def collate_audio(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pad waveforms to the longest in the batch; stack integer labels; list the rest."""
    lengths = torch.tensor([len(it["wav"]) for it in items], dtype=torch.long)
    wavs = torch.zeros(len(items), int(lengths.max()))
    for row, it in enumerate(items):
        wavs[row, :len(it["wav"])] = it["wav"]
    batch: dict[str, Any] = {"wavs": wavs, "lengths": lengths}
    for key in items[0]:
        if key == "wav":
            continue
        values = [it[key] for it in items]
        batch[key] = torch.tensor(values) if isinstance(values[0], int) else values
    return batch
