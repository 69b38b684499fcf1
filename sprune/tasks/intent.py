"""Spoken intent classification (paper 000): upstream -> mean pooling -> MLP -> AM-Softmax.

The conv feature encoder stays frozen (the paper found end-to-end training too slow to beat
chance); the transformer is fine-tuned together with the head. The pooled representation is
the mean over valid frames of one hidden state (default: the last layer's output).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from sprune.data.dataset import AudioDataset, collate_audio
from sprune.tasks.amsoftmax import AMSoftmax


@dataclass
class IntentHeadConfig:
    """The `head:` section of an intent recipe's YAML."""

    hidden_dim: int = 256        # MLP hidden units
    embed_dim: int = 128         # embedding fed to AM-Softmax
    dropout: float = 0.1
    scale: float = 30.0          # AM-Softmax s
    margin: float = 0.35         # AM-Softmax m
    layer: int = -1              # which hidden state to pool (-1: last layer)


def masked_mean(hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the first lengths[b] frames. hidden [B, T, D], lengths [B] -> [B, D]."""
    valid = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
    valid = valid.to(hidden.dtype).unsqueeze(-1)
    return (hidden * valid).sum(1) / valid.sum(1).clamp(min=1.0)


class IntentClassifier(nn.Module):
    """forward(batch with wavs [B, T], lengths [B], intent [B]) -> {"loss", "acc"}.

    `upstream(wavs, lengths)` must return an object with `hidden_states` (list of [B, T', D])
    and `lengths` [B] (frames), as `sprune.upstream` models do.
    """

    def __init__(self, upstream: nn.Module, embed_dim_in: int, num_intents: int,
                 config: IntentHeadConfig | None = None) -> None:
        super().__init__()
        config = config or IntentHeadConfig()
        self.config = config
        self.upstream = upstream
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim_in, config.hidden_dim), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, config.embed_dim))
        self.classifier = AMSoftmax(config.embed_dim, num_intents, config.scale, config.margin)

    def embed(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Utterance embeddings [B, embed_dim]."""
        out = self.upstream(wavs, lengths)
        pooled = masked_mean(out.hidden_states[self.config.layer], out.lengths)
        return self.mlp(pooled)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        loss, cos = self.classifier(self.embed(batch["wavs"], batch["lengths"]), batch["intent"])
        return {"loss": loss, "acc": (cos.argmax(-1) == batch["intent"]).float().mean()}

    @torch.no_grad()
    def predict(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Predicted intent indices [B]."""
        _, cos = self.classifier(self.embed(wavs, lengths))
        return cos.argmax(-1)


def evaluate_intents(model: IntentClassifier, dataset: AudioDataset, batch_size: int = 16,
                     device: torch.device | str | None = None) -> dict[str, float]:
    """Accuracy overall ("accuracy") and per language ("accuracy/<lang>"), in [0, 1]."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_audio)
    for batch in loader:
        pred = model.predict(batch["wavs"].to(device), batch["lengths"].to(device)).cpu()
        hits = (pred == batch["intent"]).tolist()
        langs = batch.get("lang") or ["all"] * len(hits)
        for hit, lang in zip(hits, langs):
            for key in ("accuracy", f"accuracy/{lang}"):
                correct[key] += int(hit)
                total[key] += 1
    model.train(was_training)
    return {key: correct[key] / total[key] for key in sorted(total)}
