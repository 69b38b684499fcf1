"""Spoken intent classification (paper 000): upstream -> mean pooling -> MLP -> AM-Softmax.

The conv feature encoder stays frozen (the paper found end-to-end training too slow to beat
chance); the transformer is fine-tuned together with the head. The pooled representation is
the mean over valid frames of one hidden state (default: the last layer's output).

Two choices the paper leaves open, made for fast convergence on small data: the pooled
vector is standardised per feature with batch statistics before the MLP (`input_norm:
batch`, a BatchNorm without affine parameters; mean-pooled SSL features share a large
common component that otherwise slows the head down), and the freshly initialised head may
learn faster than the pretrained upstream (`lr_scale`: its learning rate is the schedule's
times this factor).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from sprune.data.dataset import AudioDataset, collate_audio
from sprune.errors import UserError
from sprune.tasks.amsoftmax import AMSoftmax
from sprune.training import param_groups


@dataclass
class IntentHeadConfig:
    """The `head:` section of an intent recipe's YAML."""

    hidden_dim: int = 256        # MLP hidden units
    embed_dim: int = 128         # embedding fed to AM-Softmax
    dropout: float = 0.1
    scale: float = 30.0          # AM-Softmax s
    margin: float = 0.35         # AM-Softmax m
    layer: int = -1              # which hidden state to pool (-1: last layer)
    input_norm: str = "batch"    # standardise the pooled vector: batch | none
    lr_scale: float = 1.0        # head learning rate = the schedule's x lr_scale

    def __post_init__(self) -> None:
        if self.input_norm not in INPUT_NORMS:
            raise UserError(f"head.input_norm: unknown value '{self.input_norm}'; use one of "
                            f"{', '.join(INPUT_NORMS)}")
        if not self.lr_scale > 0:
            raise UserError(f"head.lr_scale: {self.lr_scale} must be positive")


INPUT_NORMS = ("batch", "none")


class PooledStandardizer(nn.BatchNorm1d):
    """Per-feature standardisation of pooled vectors [B, D] -> [B, D] (no affine scale or
    shift): batch statistics in training, running ones in evaluation and for a training
    batch of one utterance (whose statistics are undefined)."""

    def __init__(self, dim: int) -> None:
        super().__init__(dim, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, training=False,
                                eps=self.eps)
        return super().forward(x)


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
        self.input_norm = (PooledStandardizer(embed_dim_in) if config.input_norm == "batch"
                           else nn.Identity())
        self.mlp = nn.Sequential(
            nn.Linear(embed_dim_in, config.hidden_dim), nn.ReLU(), nn.Dropout(config.dropout),
            nn.Linear(config.hidden_dim, config.embed_dim))
        self.classifier = AMSoftmax(config.embed_dim, num_intents, config.scale, config.margin)

    def embed(self, wavs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Utterance embeddings [B, embed_dim]."""
        out = self.upstream(wavs, lengths)
        pooled = masked_mean(out.hidden_states[self.config.layer], out.lengths)
        return self.mlp(self.input_norm(pooled))

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """The Trainer's AdamW groups: the upstream's at the scheduled learning rate, the
        head's (MLP and AM-Softmax weights) at `lr_scale` times it."""
        head = [module for name, module in self.named_children() if name != "upstream"]
        groups = param_groups(self.upstream, weight_decay)
        for group in param_groups(nn.ModuleList(head), weight_decay):
            groups.append({**group, "lr_scale": self.config.lr_scale})
        return [group for group in groups if group["params"]]

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
    """Accuracy overall ("accuracy") and per language ("accuracy/<lang>"), in [0, 1]. In a
    distributed run each process predicts its share of the batches; the counts are added."""
    from sprune.training import distributed

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    loader = DataLoader(dataset, batch_sampler=distributed.my_share(
        dataset.length_sorted_batches(batch_size)), collate_fn=collate_audio)
    for batch in loader:
        pred = model.predict(batch["wavs"].to(device), batch["lengths"].to(device)).cpu()
        hits = (pred == batch["intent"]).tolist()
        langs = batch.get("lang") or ["all"] * len(hits)
        for hit, lang in zip(hits, langs):
            for key in ("accuracy", f"accuracy/{lang}"):
                correct[key] += int(hit)
                total[key] += 1
    model.train(was_training)
    keys = sorted(set().union(*distributed.gather_objects(sorted(total))))
    sums = distributed.sum_over_processes([correct[k] for k in keys] + [total[k] for k in keys])
    return {key: sums[i] / sums[len(keys) + i] for i, key in enumerate(keys)}
