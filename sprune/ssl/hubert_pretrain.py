"""HuBERT-style pretraining, iteration 1 (Hsu et al. 2021), on sprune's one Trainer.

Targets are k-means units of MFCC frames (`sprune.ssl.labels`). The CNN features of each
utterance are projected, random spans of frames are replaced by a learned mask embedding
(`sprune.ssl.masking`), the transformer encodes the result, and the masked frames' units are
predicted with HuBERT's cosine logits: the last layer is projected to `final_dim`, compared by
cosine similarity with a learned embedding of every unit and divided by a temperature (0.1);
cross-entropy over the masked frames (plus `unmasked_weight` times the unmasked ones).

`HubertPretrainModel` wraps an `UpstreamModel` and calls its submodules itself, so the upstream
code needs no pretraining hook; the mask embedding, the projection and the unit embeddings live
in the wrapper and are not part of the saved upstream. `pretrain()` runs the whole recipe
stage: MFCCs, k-means, units, training (resumable), `OUT/upstream/` in sprune's format.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Subset

from sprune.config import apply_overrides, from_dict, load_yaml
from sprune.data.datadir import DataDir
from sprune.data.audio import SAMPLE_RATE
from sprune.data.dataset import AudioDataset
from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.ssl.kmeans import Codebook, fit_kmeans
from sprune.ssl.labels import (IGNORE_UNIT, CropCollate, UnitDataset, collate_units,
                               dataset_mfccs, frame_units, sample_frames)
from sprune.ssl.masking import span_mask
from sprune.training import TrainConfig, Trainer, set_seed
from sprune.upstream import UpstreamConfig, UpstreamModel, save_upstream, tiny_config
from sprune.upstream.model import normalize_waveforms

CONFIG_RECORD = "pretrain.json"
CODEBOOK_FILE = "kmeans.safetensors"
UPSTREAM_DIR = "upstream"


@dataclass
class ModelConfig:
    """The upstream to pretrain: the standard 7-layer conv extractor shape (400-sample
    receptive field, 320-sample hop) with `conv_channels` channels, and a transformer."""

    family: Literal["hubert", "wav2vec2", "wavlm"] = "hubert"
    extractor_mode: Literal["group_norm", "layer_norm"] = "group_norm"
    layer_norm_first: bool = False       # post-LN like the Base models
    conv_channels: int = 64
    conv_bias: bool = False
    embed_dim: int = 192
    num_layers: int = 4
    num_heads: int = 4
    ffn_dim: int = 768
    pos_conv_kernel: int = 32
    pos_conv_groups: int = 16
    normalize_waveform: bool = False
    feature_projection_dropout: float = 0.1
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    layerdrop: float = 0.0

    def build(self) -> UpstreamConfig:
        sizes = asdict(self)
        family = sizes.pop("family")
        return tiny_config(family, **sizes)


@dataclass
class UnitsConfig:
    """k-means targets on MFCC frames (HuBERT iteration 1 uses k = 100)."""

    k: int = 100
    max_frames: int = 100000     # MFCC frames (100 Hz) sampled to fit the k-means
    iterations: int = 100        # Lloyd iterations at most
    seed: int = 0


@dataclass
class MaskConfig:
    """Span masking of the projected CNN features (HuBERT: prob 0.08, span 10)."""

    prob: float = 0.08           # chance that a frame starts a masked span
    span: int = 10               # frames per span


@dataclass
class HeadConfig:
    """Prediction head and loss terms (not saved with the upstream)."""

    final_dim: int = 64          # projection size for the cosine logits
    temperature: float = 0.1
    unmasked_weight: float = 0.0  # weight of the loss on unmasked frames
    feature_penalty: float = 10.0  # weight of the mean squared CNN feature (HuBERT)
    feature_grad_mult: float = 0.1  # gradient scale into the conv extractor (HuBERT Base)


def _default_train() -> TrainConfig:
    return TrainConfig(lr=5e-4, batch_size=8, warmup_ratio=0.08, metric="masked_acc",
                       eval_every=500, save_every=250, log_every=25)


@dataclass
class PretrainConfig:
    """`conf/pretrain.yaml` of the ssl1 recipe."""

    model: ModelConfig = field(default_factory=ModelConfig)
    units: UnitsConfig = field(default_factory=UnitsConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    train: TrainConfig = field(default_factory=_default_train)
    crop_seconds: float = 4.0    # training batches: cut to their shortest utterance, at most
    #                              this long, instead of padding (0: pad to the longest)
    eval_max_utts: int = 200     # dev utterances scored at each evaluation (0: all)
    eval_seed: int = 1234        # fixes the dev masks, so evaluations are comparable

    def check(self, where: str) -> "PretrainConfig":
        if self.units.k < 2:
            raise UserError(f"{where}: units.k is {self.units.k}; use at least 2 clusters")
        if not 0.0 < self.mask.prob < 1.0 or self.mask.span < 1:
            raise UserError(f"{where}: mask.prob must be in (0, 1) and mask.span >= 1")
        if self.head.temperature <= 0 or self.head.final_dim < 1:
            raise UserError(f"{where}: head.temperature and head.final_dim must be positive")
        if not 0.0 < self.head.feature_grad_mult <= 1.0:
            raise UserError(f"{where}: head.feature_grad_mult must be in (0, 1]")
        if 0 < self.crop_seconds * SAMPLE_RATE < self.model.build().receptive_field:
            raise UserError(f"{where}: crop_seconds {self.crop_seconds} is shorter than the "
                            "model's receptive field; use 0 (no cropping) or more")
        self.model.build().validate(f"{where}: model")
        return self


class HubertPretrainModel(nn.Module):
    """Upstream + mask embedding + cosine-logit head; forward(batch) -> {"loss", ...}.

    batch: wavs [B, T], lengths [B] (samples), units [B, T'] int64 (IGNORE_UNIT = padding).
    """

    def __init__(self, upstream: UpstreamModel, num_units: int, mask: MaskConfig,
                 head: HeadConfig) -> None:
        super().__init__()
        dim = upstream.config.embed_dim
        self.upstream = upstream
        self.mask_config = mask
        self.head_config = head
        self.mask_embedding = nn.Parameter(torch.empty(dim).uniform_())
        self.final_proj = nn.Linear(dim, head.final_dim)
        self.unit_embeddings = nn.Parameter(torch.randn(num_units, head.final_dim))

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        return self.compute_loss(batch)

    def encode(self, wavs: Tensor, lengths: Tensor, generator: torch.Generator | None = None
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mask and encode. -> (last hidden state [B, T', D], mask [B, T'] bool,
        valid frames [B, T'] bool, feature penalty [])."""
        upstream = self.upstream
        if upstream.config.normalize_waveform:
            wavs = normalize_waveforms(wavs, lengths)
        features = upstream.feature_extractor(wavs)                    # [B, T', C]
        penalty = features.float().pow(2).mean()
        scale = self.head_config.feature_grad_mult
        if scale < 1.0:  # same values, gradient into the extractor scaled (HuBERT Base: 0.1)
            features = features * scale + features.detach() * (1.0 - scale)
        frames = features.shape[1]
        frame_lengths = upstream.frame_lengths(lengths)
        valid = torch.arange(frames, device=wavs.device)[None, :] < frame_lengths[:, None]
        x = upstream.feature_projection(features)                      # [B, T', D]
        mask = span_mask(frame_lengths, frames, self.mask_config.prob, self.mask_config.span,
                         generator)
        x = torch.where(mask.unsqueeze(-1), self.mask_embedding.to(x.dtype), x)
        padding = None if bool(valid.all()) else ~valid
        hidden = upstream.encoder(x, padding)[-1]
        return hidden, mask, valid, penalty

    def logits(self, hidden: Tensor) -> Tensor:
        """Cosine similarity to every unit embedding / temperature: [B, T', D] -> [B, T', K]."""
        projected = F.normalize(self.final_proj(hidden), dim=-1)
        units = F.normalize(self.unit_embeddings, dim=-1)
        return projected @ units.T / self.head_config.temperature

    def compute_loss(self, batch: dict[str, Any], generator: torch.Generator | None = None
                     ) -> dict[str, Tensor]:
        hidden, mask, valid, penalty = self.encode(batch["wavs"], batch["lengths"], generator)
        units = batch["units"]
        if units.shape != mask.shape:
            raise ValueError(f"units {tuple(units.shape)} do not match the model's frames "
                             f"{tuple(mask.shape)}; were they made for another extractor?")
        valid = valid & (units != IGNORE_UNIT)
        masked, unmasked = mask & valid, ~mask & valid
        logits = self.logits(hidden)
        zero = logits.new_zeros(())
        masked_ce = F.cross_entropy(logits[masked], units[masked]) if masked.any() else zero
        unmasked_ce = (F.cross_entropy(logits[unmasked], units[unmasked])
                       if unmasked.any() else zero)
        loss = (masked_ce + self.head_config.unmasked_weight * unmasked_ce
                + self.head_config.feature_penalty * penalty)
        predicted = logits.argmax(-1)
        hits = predicted == units
        return {
            "loss": loss, "masked_ce": masked_ce.detach(), "unmasked_ce": unmasked_ce.detach(),
            "feature_penalty": penalty.detach(),
            "masked_acc": (hits & masked).sum() / masked.sum().clamp(min=1),
            "unmasked_acc": (hits & unmasked).sum() / unmasked.sum().clamp(min=1),
            "mask_fraction": masked.sum() / valid.sum().clamp(min=1),
            "masked_frames": masked.sum(), "unmasked_frames": unmasked.sum(),
        }


def masked_prediction_metrics(model: HubertPretrainModel, dataset: UnitDataset | Subset,
                              batch_size: int, seed: int) -> dict[str, float]:
    """Frame-weighted masked / unmasked accuracy and masked CE over `dataset`, with masks
    drawn from `seed` (the same masks at every call)."""
    generator = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    sums = {"masked_acc": 0.0, "unmasked_acc": 0.0, "masked_ce": 0.0}
    counts = {"masked": 0, "unmasked": 0}
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=collate_units):
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            out = model.compute_loss(batch, generator)
            n_masked, n_unmasked = int(out["masked_frames"]), int(out["unmasked_frames"])
            sums["masked_acc"] += float(out["masked_acc"]) * n_masked
            sums["masked_ce"] += float(out["masked_ce"]) * n_masked
            sums["unmasked_acc"] += float(out["unmasked_acc"]) * n_unmasked
            counts["masked"] += n_masked
            counts["unmasked"] += n_unmasked
    masked, unmasked = max(counts["masked"], 1), max(counts["unmasked"], 1)
    return {"masked_acc": sums["masked_acc"] / masked, "masked_ce": sums["masked_ce"] / masked,
            "unmasked_acc": sums["unmasked_acc"] / unmasked}


def _load_audio(path: str | Path, role: str) -> AudioDataset:
    data = DataDir.load(path)
    if len(data) == 0:
        raise UserError(f"{path}: the {role} data dir is empty")
    return AudioDataset(data)


def _check_record(out: Path, record: dict[str, Any]) -> None:
    """Refuse to continue a run folder made with another config or data (writes nothing:
    `pretrain` writes the record once every input has been checked)."""
    path = out / CONFIG_RECORD
    if path.is_file():
        found = json.loads(path.read_text(encoding="utf-8"))
        if found != record:
            differs = sorted(k for k in record if found.get(k) != record[k])
            raise UserError(f"{path}: {out} was made with another {', '.join(differs)}; use "
                            "another --out or delete the folder to start over")


def unit_datasets(config: PretrainConfig, upstream_config: UpstreamConfig,
                  train_audio: AudioDataset, dev_audio: AudioDataset, out: Path,
                  log: Callable[[str], None], progress: bool
                  ) -> tuple[UnitDataset, UnitDataset | Subset, Codebook]:
    """MFCCs, the k-means codebook (fitted on train, or reused from `out`) and the units of
    both splits; -> (train set, the dev utterances scored at each evaluation, the codebook).
    Writes nothing: the caller saves a newly fitted codebook."""
    log(f"MFCC features of {len(train_audio)} training utterances")
    train_mfccs = dataset_mfccs(train_audio, progress)
    codebook_path = out / CODEBOOK_FILE
    if codebook_path.is_file():
        codebook = Codebook.load(codebook_path)
        log(f"k-means codebook reused from {codebook_path}")
    else:
        frames = sample_frames(train_mfccs, config.units.max_frames, config.units.seed)
        log(f"k-means: k = {config.units.k} on {frames.shape[0]} MFCC frames")
        codebook = fit_kmeans(frames, config.units.k, config.units.seed, config.units.iterations)
        log(f"k-means: mean squared distance {codebook.inertia:.3f} after "
            f"{codebook.iterations} iterations")
    if codebook.k != config.units.k:
        raise UserError(f"{codebook_path} has {codebook.k} clusters but units.k is "
                        f"{config.units.k}; delete it to fit a new one")
    train_set = UnitDataset(train_audio, frame_units(train_audio, train_mfccs, codebook,
                                                     upstream_config))
    del train_mfccs
    dev_set = UnitDataset(dev_audio, frame_units(dev_audio, dataset_mfccs(dev_audio, progress),
                                                 codebook, upstream_config))
    if not 0 < config.eval_max_utts < len(dev_set):
        return train_set, dev_set, codebook
    step = len(dev_set) / config.eval_max_utts   # spread over the (sorted) speakers
    return (train_set, Subset(dev_set, [math.floor(i * step) for i in range(config.eval_max_utts)]),
            codebook)


def pretrain(config: PretrainConfig, train_dir: str | Path, dev_dir: str | Path,
             out_dir: str | Path, log: Callable[[str], None] = print,
             progress: bool = False) -> dict[str, Any]:
    """Run HuBERT iteration 1 into `out_dir` and return the Trainer's summary.

    out_dir/pretrain.json       the resolved config and data dirs (a rerun must match)
    out_dir/kmeans.safetensors  the codebook (centroids and the MFCC standardisation)
    out_dir/log.jsonl, checkpoint/, summary.json   the Trainer's (resumable) run
    out_dir/upstream/           the pretrained upstream in sprune's format (written last)

    Every input (data, audio, units, model, the Trainer's settings) is checked before
    anything is written, so bad ones leave no half-made run folder.
    """
    out = Path(out_dir)
    record = {"config": asdict(config), "train": str(Path(train_dir).resolve()),
              "dev": str(Path(dev_dir).resolve())}
    train_audio = _load_audio(train_dir, "training")
    dev_audio = _load_audio(dev_dir, "dev")
    _check_record(out, record)
    if (out / UPSTREAM_DIR / "config.json").is_file() and (out / "summary.json").is_file():
        log(f"{out}: finished before ({UPSTREAM_DIR}/ exists); nothing to do")
        return json.loads((out / "summary.json").read_text(encoding="utf-8"))
    upstream_config = config.model.build()
    train_set, dev_eval, codebook = unit_datasets(config, upstream_config, train_audio,
                                                  dev_audio, out, log, progress)

    set_seed(config.train.seed)
    upstream = UpstreamModel(upstream_config)
    model = HubertPretrainModel(upstream, config.units.k, config.mask, config.head)
    head_params = _count(model) - upstream.num_parameters()
    log(f"upstream: {upstream.num_parameters():,} parameters ({upstream_config.family}, "
        f"{upstream_config.num_layers} layers, D = {upstream_config.embed_dim}); "
        f"pretraining head (not saved): {head_params:,}")

    def evaluate(m: nn.Module) -> dict[str, float]:
        return masked_prediction_metrics(m, dev_eval, config.train.batch_size, config.eval_seed)

    collate = (CropCollate(upstream_config, round(config.crop_seconds * SAMPLE_RATE))
               if config.crop_seconds > 0 else collate_units)
    trainer = Trainer(model, train_set, collate, config.train, out, evaluate=evaluate,
                      show_progress=progress)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / CONFIG_RECORD).is_file():
        atomic_write_text(out / CONFIG_RECORD, json.dumps(record, indent=1) + "\n")
    if not (out / CODEBOOK_FILE).is_file():
        codebook.save(out / CODEBOOK_FILE)
    summary = trainer.fit(resume=True)
    save_upstream(model.upstream.cpu(), out / UPSTREAM_DIR)
    log(f"{out / UPSTREAM_DIR}: pretrained upstream written")
    return summary


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def load_pretrain_config(path: str | None, overrides: list[str] | tuple[str, ...] = ()
                         ) -> PretrainConfig:
    """The typed pretraining config from YAML (defaults when `path` is None) + overrides."""
    data = load_yaml(path) if path is not None else {}
    where = str(path) if path is not None else "config"
    apply_overrides(data, overrides, where)
    train = data.get("train")
    if isinstance(train, dict):  # train: keys override the pretraining defaults, not Trainer's
        data["train"] = {**asdict(_default_train()), **train}
    return from_dict(PretrainConfig, data, where).check(where)
