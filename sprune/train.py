"""One training loop for every task and pruning method.

The `Trainer` owns the loop: AdamW with linear warm-up, gradient clipping, evaluation every N
steps, atomic checkpoints (safetensors + JSON, see `sprune.checkpoint`), `resume=True` that
continues a killed run to exactly the result of an uninterrupted one, a tqdm bar, JSON-lines
logs (plus TensorBoard when installed). Pruning methods never edit the loop: they are
`Callback`s that see the trainer at fixed points (see `Callback`).

The task model is any `nn.Module` whose `forward(batch)` returns a dict with a scalar "loss"
(and optionally other scalars to log). Evaluation is a function `evaluate(model) -> metrics`.
A model may define `optimizer_groups(weight_decay) -> list of AdamW param groups` to replace
`param_groups`; a group with a "fixed_lr" key keeps that learning rate instead of following
the schedule (e.g. structured pruning's gates and Lagrange multipliers), and a group with an
"lr_scale" key follows the schedule times that factor (e.g. a fresh task head learning faster
than the pretrained upstream).

Written for one process (CPU or one GPU). For DistributedDataParallel, wrap the model in
`_training_model`, give `EpochBatchSampler` the rank / world size, and log on rank 0 only:
nothing else in the loop depends on the process count.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from sprune.checkpoint import load_state, save_state
from sprune.errors import UserError
from sprune.io import atomic_write_text


@dataclass
class TrainConfig:
    """Optimisation settings (the `train:` section of a recipe's YAML)."""

    epochs: float = 10.0            # length of the run in passes over the training set ...
    max_steps: int | None = None    # ... or in updates (wins when set)
    batch_size: int = 8
    lr: float = 5e-5
    weight_decay: float = 0.01      # not applied to biases and norms
    warmup_ratio: float = 0.1       # fraction of the updates with linear warm-up from 0
    lr_schedule: Literal["linear", "constant"] = "linear"   # after warm-up
    grad_clip: float = 1.0          # max global L2 norm; 0 disables clipping
    eval_every: int = 100           # updates between evaluations (and at the end)
    save_every: int = 100           # updates between resumable checkpoints (and at the end)
    log_every: int = 10
    seed: int = 0
    device: str = "auto"            # auto | cpu | cuda | cuda:N
    metric: str = "accuracy"        # evaluation metric that picks the best checkpoint
    metric_mode: Literal["max", "min"] = "max"
    bucket_by_length: bool = True   # batches of similar-length utterances (less padding)
    # every batch from one language (the training set's utt2lang); pathways sets it
    monolingual_batches: bool = False
    # fp32, or bf16: each update's forward and loss under torch.autocast(bfloat16) (matrix
    # products and convolutions in bfloat16; weights, gradients and optimizer state stay
    # float32; bfloat16 needs no loss scaling). Evaluation always runs in float32. Measured
    # on an H100 (l0prune of wav2vec2 Base, batch 8 x 12 s): 22 % less GPU memory (5.97 vs
    # 7.63 GiB) but no faster (45 vs 37 s for 150 updates: that run is not bound by its
    # matrix products); on CPUs without bfloat16 units it is much slower.
    precision: Literal["fp32", "bf16"] = "fp32"

    def __post_init__(self) -> None:
        for key in ("batch_size", "eval_every", "save_every", "log_every"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise UserError(f"train.{key}: {value!r} must be a whole number >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError(f"train.max_steps: {self.max_steps} must be >= 1 (or unset)")
        if not self.epochs > 0 and self.max_steps is None:
            raise UserError(f"train.epochs: {self.epochs} must be positive")
        if self.lr < 0 or not 0 <= self.warmup_ratio < 1:
            raise UserError("train.lr must be >= 0 and train.warmup_ratio in [0, 1)")
        if self.precision not in ("fp32", "bf16"):
            raise UserError(f"train.precision: {self.precision!r}; use fp32 or bf16")


class Callback:
    """Hooks into the loop. Every hook gets the trainer and may read or change its state.

    Order in one update: on_step_start -> forward/backward -> after_backward -> clip ->
    optimizer.step -> on_step_end -> (evaluation -> on_evaluate) -> (checkpoint).
    State a callback needs after a resume goes in `state_dict` (tensors and JSON values).
    """

    name: str = "callback"

    def on_train_start(self, trainer: "Trainer") -> None: ...
    def on_step_start(self, trainer: "Trainer") -> None: ...
    def after_backward(self, trainer: "Trainer") -> None: ...
    def on_step_end(self, trainer: "Trainer") -> None: ...
    def on_evaluate(self, trainer: "Trainer", metrics: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer: "Trainer") -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of a seeded permutation per epoch, restartable at any batch.

    The order depends only on (seed, epoch), so a resumed run sees the same batches.
    Shards by `rank` / `world_size` for DistributedDataParallel. With `lengths` (one per
    example), each run of `bucket_batches` consecutive batches of the permutation is sorted
    by length before it is cut into batches, and the batches are then shuffled: batches
    hold utterances of similar length (less padding, the usual bucketing of speech
    toolkits) while their order and make-up still change every epoch. With `groups` (a
    label per example, e.g. its language) every batch holds one group's examples only
    (monolingual batches), the groups' batches shuffled together.
    """

    def __init__(self, n: int, batch_size: int, seed: int, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, lengths: Sequence[int] | None = None,
                 bucket_batches: int = 16, groups: Sequence[str] | None = None) -> None:
        if lengths is not None and len(lengths) != n:
            raise ValueError(f"{len(lengths)} lengths for {n} examples")
        if groups is not None and (len(groups) != n or world_size != 1):
            raise ValueError(f"{len(groups)} group labels for {n} examples, or sharded groups")
        self.n, self.batch_size, self.seed, self.shuffle = n, batch_size, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.lengths, self.bucket_batches = lengths, bucket_batches
        self.groups = list(groups) if groups is not None else None
        self.epoch, self.start_batch = 0, 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def batches_per_epoch(self) -> int:
        if self.groups is not None:
            return sum(math.ceil(self.groups.count(g) / self.batch_size)
                       for g in set(self.groups))
        return math.ceil(math.ceil(self.n / self.world_size) / self.batch_size)

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_batch

    def epoch_batches(self) -> list[list[int]]:
        """Every batch of the current epoch for this rank, in order."""
        gen = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(self.n, generator=gen).tolist() if self.shuffle else list(range(self.n))
        order = order[self.rank::self.world_size]
        if self.groups is None and self.lengths is None:
            size = self.batch_size
            return [order[b * size:(b + 1) * size] for b in range(self.batches_per_epoch())]
        if self.groups is None:
            batches = self._cut(order)
        else:
            batches = [batch for g in sorted(set(self.groups))
                       for batch in self._cut([i for i in order if self.groups[i] == g])]
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
        return batches

    def _cut(self, order: list[int]) -> list[list[int]]:
        """`order` cut into batches (length-bucketed when lengths are known)."""
        size = self.batch_size
        if self.lengths is None:
            return [order[b:b + size] for b in range(0, len(order), size)]
        chunk = size * self.bucket_batches
        batches = []
        for start in range(0, len(order), chunk):
            bucket = sorted(order[start:start + chunk], key=lambda i: self.lengths[i])
            batches += [bucket[b:b + size] for b in range(0, len(bucket), size)]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches()[self.start_batch:]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{name}' requested but no GPU is visible; use device: cpu")
    return torch.device(name)


def move_to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch


def batch_size_of(batch: Any) -> int:
    """Number of examples in a collated batch: dim 0 of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    values = batch.values() if isinstance(batch, dict) else batch
    for v in values:
        if isinstance(v, torch.Tensor):
            return int(v.shape[0])
    raise TypeError("cannot tell the batch size: the batch holds no tensor")


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def planned_steps(config: TrainConfig, num_examples: int) -> int:
    """Updates a `Trainer` with `config` makes over `num_examples` training examples:
    `max_steps` when set, else `epochs` passes (at least one update)."""
    if config.max_steps is not None:
        return config.max_steps
    per_epoch = EpochBatchSampler(num_examples, config.batch_size, config.seed).batches_per_epoch()
    return max(1, round(config.epochs * per_epoch))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices / kernels, none on biases and norm scales."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Runs `config` on `model` over `train_set`, writing into `out_dir`.

    out_dir/log.jsonl          one JSON object per log / evaluation event
    out_dir/checkpoint/last    resumable state (model, optimizer, RNGs, callbacks, counters)
    out_dir/checkpoint/best    model weights at the best evaluation (config.metric)
    out_dir/summary.json       final metrics, steps, passes over the data, wall time
    """

    def __init__(self, model: nn.Module, train_set: Dataset, collate_fn: Callable,
                 config: TrainConfig, out_dir: str | os.PathLike,
                 evaluate: Callable[[nn.Module], dict[str, float]] | None = None,
                 callbacks: Sequence[Callback] = (), show_progress: bool | None = None) -> None:
        if len(train_set) == 0:
            raise UserError("the training set is empty; check the data dir given for training")
        self.config = config
        self.out_dir = Path(out_dir)
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.train_set = train_set
        self.collate_fn = collate_fn
        self.evaluate_fn = evaluate
        self.callbacks = list(callbacks)
        lengths = getattr(train_set, "lengths", None) if config.bucket_by_length else None
        self.sampler = EpochBatchSampler(len(train_set), config.batch_size, config.seed,
                                         lengths=lengths() if callable(lengths) else None,
                                         groups=self._languages(train_set, config))
        self.steps_per_epoch = self.sampler.batches_per_epoch()
        self.max_steps = planned_steps(config, len(train_set))
        self.warmup_steps = int(config.warmup_ratio * self.max_steps)
        custom_groups = getattr(model, "optimizer_groups", None)
        groups = (custom_groups(config.weight_decay) if callable(custom_groups)
                  else param_groups(model, config.weight_decay))
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr)
        self.step = 0              # updates done
        self.initial_step = 0      # where this run started (see `fit`)
        self.epoch = 0             # current epoch
        self.batch_in_epoch = 0    # batches of the current epoch already consumed
        self.samples_seen = 0
        self.best_metric: float | None = None
        self.last_metrics: dict[str, float] = {}
        self.should_stop = False
        self.loss: torch.Tensor | None = None
        self.batch: Any = None     # the batch of the current update (callbacks read it)
        self._loader_iter: Iterator[Any] | None = None
        self.show_progress = sys.stderr.isatty() if show_progress is None else show_progress
        self._tb = None

    @staticmethod
    def _languages(train_set: Dataset, config: TrainConfig) -> list[str] | None:
        if not config.monolingual_batches:
            return None
        languages = getattr(train_set, "languages", None)
        found = languages() if callable(languages) else None
        if found is None or any(lang is None for lang in found):
            raise UserError("monolingual batches need the language of every training "
                            "utterance; add utt2lang to the training data dir")
        return found

    # ---- schedule -------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Learning rate for update number `step` (0-based)."""
        base = self.config.lr
        if step < self.warmup_steps:
            return base * (step + 1) / self.warmup_steps
        if self.config.lr_schedule == "constant":
            return base
        remaining = max(1, self.max_steps - self.warmup_steps)
        return base * max(0.0, 1.0 - (step - self.warmup_steps) / remaining)

    @property
    def passes(self) -> float:
        """Passes over the training set spent so far (fine-tuning epochs, fractional)."""
        return self.samples_seen / len(self.train_set)

    # ---- logging --------------------------------------------------------------------
    def log(self, event: str, **values: Any) -> None:
        record = {"event": event, "step": self.step, "epoch": self.epoch, **values}
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{event}/{k}", v, self.step)

    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional
            return
        self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    # ---- checkpoints ----------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoint"

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "counters": {"step": self.step, "epoch": self.epoch,
                         "batch_in_epoch": self.batch_in_epoch, "samples_seen": self.samples_seen,
                         "best_metric": self.best_metric, "max_steps": self.max_steps,
                         "initial_step": self.initial_step},
            "last_metrics": self.last_metrics,
            "rng": _rng_state(),
            "callbacks": {cb.name: cb.state_dict() for cb in self.callbacks},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        c = state["counters"]
        if c["max_steps"] != self.max_steps:
            raise UserError(f"{self.checkpoint_dir / 'last'} was written for {c['max_steps']} updates "
                            f"but this config asks for {self.max_steps}; resume with the same config")
        self.step, self.epoch, self.batch_in_epoch = c["step"], c["epoch"], c["batch_in_epoch"]
        self.samples_seen, self.best_metric = c["samples_seen"], c["best_metric"]
        self.initial_step = c["initial_step"]
        self.last_metrics = state["last_metrics"]
        for cb in self.callbacks:
            cb.load_state_dict(state["callbacks"].get(cb.name, {}))
        _set_rng_state(state["rng"])

    def save_checkpoint(self) -> None:
        save_state(self.checkpoint_dir / "last", self.state_dict())

    def save_model(self, name: str) -> Path:
        """Save the model weights alone as checkpoint/<name> (e.g. 'best', 'level3')."""
        path = self.checkpoint_dir / name
        save_state(path, {"model": self.model.state_dict(), "step": self.step,
                          "metrics": self.last_metrics})
        return path

    def load_model(self, name: str) -> None:
        self.model.load_state_dict(load_state(self.checkpoint_dir / name)["model"])

    # ---- the loop -------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        if self.evaluate_fn is None:
            return {}
        self.model.eval()
        with torch.no_grad():
            metrics = {k: float(v) for k, v in self.evaluate_fn(self.model).items()}
        self.model.train()
        self.last_metrics = metrics
        for cb in self.callbacks:
            cb.on_evaluate(self, metrics)
        self.log("eval", **metrics)
        value = metrics.get(self.config.metric)
        if value is not None:
            better = (self.best_metric is None
                      or (value > self.best_metric if self.config.metric_mode == "max"
                          else value < self.best_metric))
            if better:
                self.best_metric = value
                self.save_model("best")
        return metrics

    def restart_data(self) -> None:
        """Re-create the data iterator at (epoch, batch_in_epoch); call after changing them."""
        self._loader_iter = None

    def _next_batch(self) -> Any:
        if self._loader_iter is None:
            self.sampler.set_position(self.epoch, self.batch_in_epoch)
            # Its own generator: starting an iterator would otherwise draw from the global
            # RNG, so a run resumed mid-epoch would see other random numbers than an
            # uninterrupted one (random crops in collate, dropout, gate noise).
            self._loader_iter = iter(DataLoader(self.train_set, batch_sampler=self.sampler,
                                                collate_fn=self.collate_fn, num_workers=0,
                                                generator=torch.Generator()))
        return next(self._loader_iter)

    def fit(self, resume: bool = False, initial_step: int = 0) -> dict[str, Any]:
        """Train to `max_steps` (or until a callback sets `should_stop`); returns the summary.

        initial_step: start a fresh run as if `initial_step` updates were already done: the
        learning-rate schedule and the data order continue from there. This is how lottery-
        ticket rewinding to iteration k (Frankle et al. 2019) resumes training at step k.
        """
        start_time = time.time()
        set_seed(self.config.seed)
        if resume and (self.checkpoint_dir / "last").is_dir():
            self.load_state_dict(load_state(self.checkpoint_dir / "last"))
            self.log("resume")
        else:
            if (self.out_dir / "log.jsonl").exists():
                (self.out_dir / "log.jsonl").unlink()
            if not 0 <= initial_step < self.max_steps:
                raise ValueError(f"initial_step {initial_step} outside [0, {self.max_steps})")
            self.step = self.initial_step = initial_step
            self.epoch, self.batch_in_epoch = divmod(initial_step, self.steps_per_epoch)
        self._open_tensorboard()
        self.model.train()
        for cb in self.callbacks:
            cb.on_train_start(self)
        bar = tqdm(total=self.max_steps, initial=self.step, disable=not self.show_progress,
                   desc=self.out_dir.name, dynamic_ncols=True, leave=False)
        self._loader_iter = None
        while self.step < self.max_steps and not self.should_stop:
            batch = self.batch = self._next_batch()
            for cb in self.callbacks:
                cb.on_step_start(self)
            lr = self.lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = group.get("fixed_lr", lr * group.get("lr_scale", 1.0))
            with torch.autocast(self.device.type, dtype=torch.bfloat16,
                                enabled=self.config.precision == "bf16"):
                out = self.model(move_to_device(batch, self.device))
            self.loss = out["loss"]
            self.optimizer.zero_grad(set_to_none=True)
            self.loss.backward()
            for cb in self.callbacks:
                cb.after_backward(self)
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(
                    [p for g in self.optimizer.param_groups for p in g["params"]],
                    self.config.grad_clip)
            self.optimizer.step()
            self.step += 1
            self.batch_in_epoch += 1
            self.samples_seen += batch_size_of(batch)
            if self.batch_in_epoch >= self.steps_per_epoch:
                for cb in self.callbacks:
                    cb.on_epoch_end(self)
                self.epoch += 1
                self.batch_in_epoch = 0
                self._loader_iter = None
            for cb in self.callbacks:
                cb.on_step_end(self)
            bar.update(1)
            if self.step % self.config.log_every == 0:
                scalars = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
                self.log("train", lr=lr, **scalars)
                bar.set_postfix(loss=f"{float(self.loss.detach()):.3f}")
            last = self.step >= self.max_steps or self.should_stop
            if self.step % self.config.eval_every == 0 or last:
                self.evaluate()
            if self.step % self.config.save_every == 0 or last:
                self.save_checkpoint()
        bar.close()
        for cb in self.callbacks:
            cb.on_train_end(self)
        summary = {"steps": self.step, "updates": self.step - self.initial_step,
                   "passes": self.passes, "best_metric": self.best_metric,
                   "final_metrics": self.last_metrics, "wall_seconds": time.time() - start_time}
        atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
        if self._tb is not None:
            self._tb.close()
        return summary
