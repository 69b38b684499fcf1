"""Task experiments: build the task model, its data and its evaluation from a recipe config,
and hand them to a pruning method (`sprune prune`), to evaluation (`sprune evaluate`).

An experiment folder (`exp/<tag>/<run>`) holds `experiment.json` (the resolved config, the
upstream spec and the label vocabulary), so it can be evaluated later without the recipe.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from torch import nn

from sprune.config import from_dict, load_config
from sprune.data.datadir import DataDir
from sprune.data.dataset import AudioDataset, collate_audio
from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.prune.methods import PruneContext
from sprune.tasks.intent import IntentClassifier, IntentHeadConfig, evaluate_intents
from sprune.train import TrainConfig, Trainer, resolve_device

EXPERIMENT_FILE = "experiment.json"


@dataclass
class ExperimentConfig:
    """A recipe's `conf/finetune.yaml`: the task, its head and the fine-tuning settings."""

    task: Literal["intent"] = "intent"
    upstream: str | None = None          # upstream spec (a path); `--upstream` overrides it
    freeze_feature_encoder: bool = True  # paper 000: the conv feature encoder stays frozen
    head: IntentHeadConfig = field(default_factory=IntentHeadConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preload_audio: bool = True           # read all audio once (small corpora)
    eval_batch_size: int = 16


class IntentExperiment:
    """The intent task of a recipe: model factory, datasets, evaluation, trainer factory."""

    def __init__(self, config: ExperimentConfig, upstream_spec: str, intents: Sequence[str],
                 dev: DataDir | None = None, train: DataDir | None = None) -> None:
        from sprune.upstream import load_upstream

        self.config = config
        self.upstream_spec = upstream_spec
        self.intents = list(intents)
        self._upstream, self.upstream_config = load_upstream(
            upstream_spec, freeze_feature_encoder=config.freeze_feature_encoder)
        self.train_set = (AudioDataset(train, self.intents, preload=config.preload_audio)
                          if train is not None else None)
        self.dev_set = (AudioDataset(dev, self.intents, preload=config.preload_audio)
                        if dev is not None else None)

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def for_training(cls, config: ExperimentConfig, upstream_spec: str, train_dir: str,
                     dev_dir: str) -> "IntentExperiment":
        train = DataDir.load(train_dir)
        if len(train) == 0:
            raise UserError(f"{train_dir}: the training set is empty")
        if train.utt2intent is None:
            raise UserError(f"{train_dir}/utt2intent is missing; the intent task needs it")
        intents = sorted(set(train.utt2intent.values()))
        return cls(config, upstream_spec, intents, dev=DataDir.load(dev_dir), train=train)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> "IntentExperiment":
        path = Path(folder) / EXPERIMENT_FILE
        if not path.is_file():
            raise UserError(f"{path} is missing; give a folder written by `sprune prune`")
        doc = json.loads(path.read_text())
        config = from_dict(ExperimentConfig, doc["config"], str(path))
        return cls(config, doc["upstream"], doc["intents"])

    def save(self, folder: Path) -> None:
        doc = {"config": asdict(self.config), "upstream": self.upstream_spec,
               "intents": self.intents}
        atomic_write_text(folder / EXPERIMENT_FILE, json.dumps(doc, indent=1) + "\n")

    # -- what methods need -------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """Pretrained upstream + a head initialised from the training seed (identical on every
        call, as rewinding and the methods' comparisons need)."""
        torch.manual_seed(self.config.train.seed)
        return IntentClassifier(copy.deepcopy(self._upstream), self.upstream_config.embed_dim,
                                len(self.intents), self.config.head)

    def groups(self) -> dict[str, list[str]]:
        return {name: [f"upstream.{p}" for p in params]
                for name, params in self._upstream.parameter_groups().items()}

    def evaluate(self, model: nn.Module, dataset: AudioDataset | None = None) -> dict[str, float]:
        return evaluate_intents(model, dataset or self.dev_set, self.config.eval_batch_size)

    def make_trainer(self, model: nn.Module, out_dir: Path, callbacks, config: TrainConfig
                     ) -> Trainer:
        if self.train_set is None:
            raise RuntimeError("this experiment was loaded for evaluation only")
        return Trainer(model, self.train_set, collate_audio, config, out_dir,
                       evaluate=self.evaluate, callbacks=callbacks)

    def context(self, dense_dir: Path | None, resume: bool = True) -> PruneContext:
        return PruneContext(build_model=self.build_model, groups=self.groups(),
                            train_config=self.config.train, make_trainer=self.make_trainer,
                            evaluate=self.evaluate, dense_dir=dense_dir, resume=resume,
                            log=lambda msg: print(msg, flush=True))

    def dataset(self, data_dir: str | os.PathLike) -> AudioDataset:
        return AudioDataset(DataDir.load(data_dir), self.intents, preload=False)


def load_experiment_config(path: str | None, overrides: Sequence[str] = ()) -> ExperimentConfig:
    return load_config(ExperimentConfig, path, overrides)
