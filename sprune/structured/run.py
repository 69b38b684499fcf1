"""One structured-pruning run (`sprune l0prune`): YAML -> trained masks in a run folder.

The YAML (`L0PruneConfig`):

    upstream: ../../../sprune/resources/upstream/tiny_hubert_en   # any load_upstream spec
    freeze_feature_encoder: null   # null: frozen unless structured.structures.conv_channels
    max_seconds: 8.0               # longer training utterances are cut at a random offset
    preload_audio: true
    structured: {target_sparsity: 0.5, structures: {...}, ...}   # StructuredPruningConfig
    train: {max_steps: 400, batch_size: 8, lr: 2e-4, ...}         # TrainConfig

The run folder (`train_masks`):

    config.yaml     the resolved config (every key; feeds `--config` again)
    data.json       the training / dev data dirs
    log.jsonl, checkpoint/last, summary.json   the Trainer's (a killed run resumes)
    masks/          trained gates + the distilled full-size student (`mask_store`)

Dev evaluation (`evaluate_dev`, every `train.eval_every` updates) reports the distillation
loss of the student under its deterministic 0/1 masks, the sparsity those masks shrink to
(`sparsity`) and the expected sparsity of the gates (`expected_sparsity`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import yaml
from torch.utils.data import DataLoader

from sprune.config import apply_overrides, from_dict, load_yaml
from sprune.data.dataset import AudioDataset, collate_audio
from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.structured.mask_store import MASKS_JSON, RUN_MASKS_DIR
from sprune.structured.task import SaveMasks, StructuredPruningConfig, StructuredPruningTask
from sprune.training import TrainConfig, Trainer, planned_steps, set_seed

CONFIG_FILE = "config.yaml"
DATA_FILE = "data.json"


@dataclass
class L0PruneConfig:
    """A structured-pruning YAML (see the module docstring)."""

    upstream: str | None = None
    freeze_feature_encoder: bool | None = None
    max_seconds: float | None = 8.0
    preload_audio: bool = True
    structured: StructuredPruningConfig = field(default_factory=StructuredPruningConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def frozen_encoder(self) -> bool:
        if self.freeze_feature_encoder is None:
            return not self.structured.structures.conv_channels
        return self.freeze_feature_encoder

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["structured"]["structures"] = dataclasses.asdict(self.structured.structures)
        return data


def load_l0prune_config(path: str | os.PathLike, overrides: Sequence[str] = (),
                        upstream: str | None = None) -> L0PruneConfig:
    """Read a structured-pruning YAML plus `--set` overrides; bad keys are `UserError`s."""
    where = str(path)
    data = apply_overrides(load_yaml(path), overrides, where)
    structured = data.pop("structured", {})
    if not isinstance(structured, dict):
        raise UserError(f"{where}: structured: expected a mapping of StructuredPruningConfig "
                        "keys (target_sparsity, structures, ...)")
    config = from_dict(L0PruneConfig, data, where)
    config.structured = StructuredPruningConfig.from_dict(structured, f"{where}: structured")
    if upstream is not None:
        config.upstream = upstream
    if not config.upstream:
        raise UserError(f"{where}: no upstream: set `upstream:` or pass --upstream")
    if config.max_seconds is not None and config.max_seconds < 0.1:
        raise UserError(f"{where}: max_seconds {config.max_seconds} is shorter than the "
                        "model's receptive field; use at least 0.1 or null")
    return config


class CropCollate:
    """`collate_audio` after cutting utterances longer than `max_samples` to `max_samples`
    at a random offset (torch's global RNG, which the Trainer restores on resume)."""

    def __init__(self, max_samples: int | None) -> None:
        self.max_samples = max_samples

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if self.max_samples is not None:
            items = [self._crop(item) for item in items]
        return collate_audio(items)

    def _crop(self, item: dict[str, Any]) -> dict[str, Any]:
        wav = item["wav"]
        extra = len(wav) - int(self.max_samples or 0)
        if extra <= 0:
            return item
        offset = int(torch.randint(extra + 1, ()))
        return {**item, "wav": wav[offset:offset + self.max_samples]}


def audio_set(data_dir: str | os.PathLike, preload: bool) -> AudioDataset:
    """The audio of a data dir (labels are not needed: distillation is task-agnostic)."""
    from sprune.data.datadir import DataDir

    data = DataDir.load(data_dir)
    if len(data) == 0:
        raise UserError(f"{data_dir}: the data dir is empty")
    return AudioDataset(data, preload=preload)


@torch.no_grad()
def evaluate_dev(task: StructuredPruningTask, dataset: AudioDataset, batch_size: int
                 ) -> dict[str, float]:
    """Distillation loss under the deterministic masks (mean over utterances), the sparsity
    those masks shrink to, and the gates' expected sparsity."""
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_audio)
    device = next(task.parameters()).device
    total, count = 0.0, 0
    for batch in loader:
        out = task({"wavs": batch["wavs"].to(device), "lengths": batch["lengths"].to(device)})
        total += float(out["distill"]) * len(batch["lengths"])
        count += len(batch["lengths"])
    masks = task.student.eval_masks()
    return {"distill": total / max(count, 1), "sparsity": task.budget.sparsity_of(masks),
            "expected_sparsity": float(task.budget.expected_sparsity(
                task.student.gates.probabilities()))}


def _check_same_config(out: Path, resolved: str) -> None:
    stored = out / CONFIG_FILE
    if stored.is_file() and stored.read_text(encoding="utf-8") != resolved:
        raise UserError(f"{stored} holds another config than this run's; resume with the same "
                        "config and --set options, pass --restart, or write to another --out")


GAP_TOLERANCE = 0.02   # |0/1-mask sparsity - expected sparsity| worth a note


def undecided_fraction(masks_dir: str | os.PathLike, low: float = 0.1,
                       high: float = 0.9) -> float:
    """Share of the gates of a masks dir whose P(z != 0) lies in (low, high)."""
    from safetensors.torch import load_file

    from sprune.io import read_json_object
    from sprune.structured.hard_concrete import prob_nonzero
    from sprune.structured.mask_store import MASKS_FILE

    masks_dir = Path(masks_dir)
    beta = float(read_json_object(masks_dir / MASKS_JSON)["beta"])
    alphas = torch.cat([a.flatten() for a in load_file(str(masks_dir / MASKS_FILE)).values()])
    probs = prob_nonzero(alphas, beta)
    return float(((probs > low) & (probs < high)).float().mean())


def gap_note(report: dict[str, Any], undecided: float) -> str | None:
    """Why the 0/1 masks' sparsity differs from the expected one, when it does by more than
    `GAP_TOLERANCE`. The expected count multiplies the probabilities of nested gates (block x
    head x dims), while the 0/1 rule rounds each level on its own: a block gate at P = 0.7
    removes 30 % of its block in expectation and nothing once rounded. Gates that have not
    separated towards 0 or 1 (short runs, too small mask_lr) make the two differ."""
    gap = report["scope_sparsity"] - report["expected_scope_sparsity"]
    if abs(gap) <= GAP_TOLERANCE:
        return None
    return (f"note: the 0/1 masks are {abs(gap):.3f} {'more' if gap > 0 else 'less'} sparse "
            f"than expected; {100 * undecided:.0f} % of the gates are undecided "
            "(0.1 < P(z != 0) < 0.9): rounding nested gates one level at a time differs "
            "from their expected product; train longer or raise structured.mask_lr")


def finished(out: str | os.PathLike, config: "L0PruneConfig | None" = None) -> bool:
    """True when the run folder holds its trained masks and the Trainer's summary. With
    `config`, a folder trained with another config is a `UserError` (not a reuse)."""
    out = Path(out)
    if config is not None:
        _check_same_config(out, yaml.safe_dump(config.to_dict(), sort_keys=False))
    return (out / RUN_MASKS_DIR / MASKS_JSON).is_file() and (out / "summary.json").is_file()


def train_masks(config: L0PruneConfig, train_dir: str, dev_dir: str | None, out: str | Path,
                where: str = "config", log: Callable[[str], None] = print,
                show_progress: bool = False, restart: bool = False) -> dict[str, Any]:
    """Train the masks of `config` on the audio of `train_dir` into `out` (module docstring).

    Resumes from `out/checkpoint/last` when present; returns the Trainer's summary. Every
    input (data, upstream, structures, the Trainer's settings) is checked before `out` is
    touched, so bad ones leave no half-made run folder; `restart` deletes an existing `out`
    only then.
    """
    import shutil

    from sprune.upstream import load_upstream

    out = Path(out)
    resolved = yaml.safe_dump(config.to_dict(), sort_keys=False)
    if not restart:
        _check_same_config(out, resolved)
    train_set = audio_set(train_dir, config.preload_audio)
    dev_set = audio_set(dev_dir, config.preload_audio) if dev_dir else None
    upstream, _ = load_upstream(config.upstream, freeze_feature_encoder=config.frozen_encoder())
    total = planned_steps(config.train, len(train_set))
    set_seed(config.train.seed)  # the gates' initial noise and the projections
    task = StructuredPruningTask(upstream, config.structured, total_steps=total,
                                 where=f"{where}: structured")
    max_samples = (None if config.max_seconds is None
                   else int(round(config.max_seconds * 16000)))
    evaluate = None
    if dev_set is not None:
        def evaluate(model: torch.nn.Module) -> dict[str, float]:
            return evaluate_dev(task, dev_set, config.train.batch_size)
    trainer = Trainer(task, train_set, CropCollate(max_samples), config.train, out,
                      evaluate=evaluate, callbacks=[SaveMasks()], show_progress=show_progress)
    if restart and out.exists():
        shutil.rmtree(out)
    atomic_write_text(out / CONFIG_FILE, resolved)
    atomic_write_text(out / DATA_FILE, json.dumps({"train": str(train_dir), "dev": dev_dir},
                                                  indent=1) + "\n")
    resuming = (out / "checkpoint" / "last").is_dir()
    log(f"{'resuming' if resuming else 'training'} masks: {total} updates, target sparsity "
        f"{config.structured.target_sparsity:g}, structures "
        f"[{', '.join(config.structured.structures.enabled())}]")
    return trainer.fit(resume=True)
