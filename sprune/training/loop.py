"""The training loop every task and pruning method runs.

The `Trainer` owns the loop: AdamW with linear warm-up, gradient clipping, evaluation every N
steps, atomic checkpoints (safetensors + JSON, see `sprune.checkpoint`), `resume=True` that
continues a killed run to exactly the result of an uninterrupted one, a tqdm bar, JSON-lines
logs (plus TensorBoard when installed). Pruning methods never edit the loop: they are
`Callback`s that see the trainer at fixed points (see `Callback`).

The task model is any `nn.Module` whose `forward(batch)` returns a dict with a scalar "loss"
(and optionally other scalars to log, and "loss_weight": what the loss is a mean over, e.g.
the batch's labels, for distributed runs). Evaluation is a function `evaluate(model) -> metrics`.
A model may define `optimizer_groups(weight_decay) -> list of AdamW param groups` to replace
`param_groups`; a group with a "fixed_lr" key keeps that learning rate instead of following
the schedule (e.g. structured pruning's gates and Lagrange multipliers), and a group with an
"lr_scale" key follows the schedule times that factor (e.g. a fresh task head learning faster
than the pretrained upstream).

Under torchrun (see `sprune.training.distributed`) the same loop runs in every process:
`train.batch_size` is the global batch, each process trains on its shard of every global
batch (`EpochBatchSampler`), the forward runs through DistributedDataParallel (gradients
averaged across processes during the backward, before any callback sees them), and each
process's loss is weighted by its share of the global batch ("loss_weight" summed over the
processes when the model gives it, else examples), so N processes x B/N examples make the
update one process makes on B. Callbacks keep seeing the plain model
(`trainer.model`) and the averaged gradients; rank 0 alone writes the log, checkpoints and
summary. The step itself never waits on the device: losses are read on logging steps only.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from sprune.checkpoint import load_state, save_state
from sprune.errors import SharedUserError, UserError
from sprune.io import atomic_write_text
from sprune.training import distributed
from sprune.training.callbacks import Callback
from sprune.training.config import TrainConfig
from sprune.training.device import move_to_device, resolve_device
from sprune.training.run_log import RunLog, progress_bar
from sprune.training.sampler import EpochBatchSampler, planned_steps
from sprune.training.state import rng_state, set_rng_state, set_seed


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices / kernels, none on biases and norm scales."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@contextlib.contextmanager
def forward_precision(device: torch.device, precision: str) -> Iterator[None]:
    """The training forward's numerics: float32, or bfloat16 autocast (`train.precision`).

    On a CPU under bfloat16, attention runs SDPA's math backend: the fused CPU kernel's
    bfloat16 backward is slow (measured on the 2-core build machine, tiny_hubert_en, batch 8
    x 2.3 s, one thread: 142 ms per update with the fused kernel, 126 ms with the math one;
    in float32 the fused kernel is the faster one, 162 vs 174 ms).
    """
    if precision != "bf16":
        yield
        return
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16))
        if device.type == "cpu":
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield


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
        self.world = distributed.current()
        self._check_processes(config, len(train_set))
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        self.train_set = train_set
        self.collate_fn = collate_fn
        self.evaluate_fn = evaluate
        self.callbacks = list(callbacks)
        lengths = getattr(train_set, "lengths", None) if config.bucket_by_length else None
        self.sampler = EpochBatchSampler(len(train_set), config.batch_size, config.seed,
                                         lengths=lengths() if callable(lengths) else None,
                                         groups=self._languages(train_set, config),
                                         rank=self.world.rank, world_size=self.world.world_size)
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
        self.run_log = RunLog(self.out_dir)
        self._forward_model = self._distributed_model()

    def _check_processes(self, config: TrainConfig, examples: int) -> None:
        """Every process of a distributed run must train the same config on the same data,
        and the global batch must split evenly between them."""
        n = self.world.world_size
        if n == 1:
            return
        if config.batch_size % n:
            raise SharedUserError(f"train.batch_size {config.batch_size} is the global batch "
                                  f"and must split evenly over the {n} processes "
                                  f"(WORLD_SIZE); use a multiple of {n}")
        setup = json.dumps({"train": dataclasses.asdict(config), "examples": examples},
                           sort_keys=True, default=str)
        distributed.check_same(setup, "the train config or training set size",
                               "start every process with the same config, options and data")

    def _distributed_model(self) -> nn.Module:
        """The module the training forward runs through: DistributedDataParallel around
        `model` in a distributed run (it broadcasts rank 0's weights now and averages the
        gradients during each backward), the model itself otherwise. DDP must be told when a
        forward may skip parameters (an upstream with LayerDrop skips whole layers); that
        costs a walk over the graph every update, so it is asked for only then."""
        if self.world.world_size == 1:
            return self.model
        from torch.nn.parallel import DistributedDataParallel

        skips = any(getattr(getattr(module, "config", None), "layerdrop", 0) or 0
                    for module in self.model.modules())
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model, device_ids=ids,
                                       find_unused_parameters=bool(skips))

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
        """One event in log.jsonl (and TensorBoard); rank 0 only."""
        self.run_log.write({"event": event, "step": self.step, "epoch": self.epoch, **values})

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
            "rng": rng_state(),
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
        set_rng_state(state["rng"])

    def save_checkpoint(self) -> None:
        """checkpoint/last (written by rank 0; every process waits until it is complete)."""
        self.sync_buffers()
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
    def sync_buffers(self) -> None:
        """Give every process rank 0's buffers (running statistics a training forward
        updates from its own shard); DDP does so before each forward, this before an
        evaluation or checkpoint, so every process evaluates and saves the same model."""
        if self.world.world_size > 1:
            distributed.broadcast_(list(self.model.buffers()))

    def evaluate(self) -> dict[str, float]:
        self.sync_buffers()
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

    def _scaled_loss(self, out: dict[str, Any], share: float) -> torch.Tensor:
        """The loss to differentiate: in a distributed run, times world_size x this
        process's part of the global batch, so DDP's average of the gradients is the global
        batch's gradient. The part is loss_weight / its sum over the processes when the model
        reports "loss_weight" (a loss that is a mean over labels or tokens), else the share
        of examples; a stand-in shard (share 0) adds nothing. No host sync: the sum stays a
        tensor."""
        loss = out["loss"]
        n = self.world.world_size
        if n == 1:
            return loss
        if "loss_weight" not in out:
            return loss * (share * n)
        local = out["loss_weight"].detach().float().reshape(1) * (1.0 if share > 0 else 0.0)
        total = local.clone()
        distributed.all_reduce_sum_([total])
        return loss * (local * n / total.clamp(min=1e-12)).squeeze(0)

    def restart_data(self) -> None:
        """Re-create the data iterator at (epoch, batch_in_epoch); call after changing them."""
        self._loader_iter = None

    def _next_batch(self) -> Any:
        if self._loader_iter is None:
            self.sampler.set_position(self.epoch, self.batch_in_epoch)
            # Its own generator: starting an iterator would otherwise draw from the global
            # RNG, so a run resumed mid-epoch would see other random numbers than an
            # uninterrupted one (random crops in collate, dropout, gate noise). Pinned
            # batches on a GPU: their non-blocking upload does not wait for its queue.
            self._loader_iter = iter(DataLoader(self.train_set, batch_sampler=self.sampler,
                                                collate_fn=self.collate_fn, num_workers=0,
                                                generator=torch.Generator(),
                                                pin_memory=self.device.type == "cuda"))
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
            self.run_log.start(fresh=False)
            self.log("resume")
        else:
            self.run_log.start(fresh=True)
            if not 0 <= initial_step < self.max_steps:
                raise ValueError(f"initial_step {initial_step} outside [0, {self.max_steps})")
            self.step = self.initial_step = initial_step
            self.epoch, self.batch_in_epoch = divmod(initial_step, self.steps_per_epoch)
        self.model.train()
        for cb in self.callbacks:
            cb.on_train_start(self)
        bar = progress_bar(self.max_steps, self.step, self.out_dir.name, self.show_progress)
        trained = [p for g in self.optimizer.param_groups for p in g["params"]]
        self._loader_iter = None
        while self.step < self.max_steps and not self.should_stop:
            batch = self.batch = self._next_batch()
            share = self.sampler.shard_weight(self.batch_in_epoch)
            global_batch = len(self.sampler.global_batches()[self.batch_in_epoch])
            for cb in self.callbacks:
                cb.on_step_start(self)
            lr = self.lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = group.get("fixed_lr", lr * group.get("lr_scale", 1.0))
            with forward_precision(self.device, self.config.precision):
                out = self._forward_model(move_to_device(batch, self.device))
            self.loss = out["loss"]
            self.optimizer.zero_grad(set_to_none=True)
            # DDP averages the processes' gradients; weighting each loss by the process's
            # share of the global batch makes that average the global batch's gradient
            self._scaled_loss(out, share).backward()
            for cb in self.callbacks:
                cb.after_backward(self)
            if self.config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trained, self.config.grad_clip)
            self.optimizer.step()
            self.step += 1
            self.batch_in_epoch += 1
            self.samples_seen += global_batch
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
                scalars = {k: float(v.detach()) for k, v in out.items()
                           if torch.is_tensor(v) and v.numel() == 1 and k != "loss_weight"}
                self.log("train", lr=lr, **scalars)
                bar.set_postfix(loss=f"{float(self.loss.detach()):.3f}")
            last = self.step >= self.max_steps or self.should_stop
            if self.step % self.config.eval_every == 0 or last:
                self.evaluate()
            if self.step % self.config.save_every == 0 or last:
                self.save_checkpoint()
        bar.close()   # the last update evaluated and saved: the buffers are in sync
        for cb in self.callbacks:
            cb.on_train_end(self)
        summary = {"steps": self.step, "updates": self.step - self.initial_step,
                   "passes": self.passes, "best_metric": self.best_metric,
                   "final_metrics": self.last_metrics, "wall_seconds": time.time() - start_time}
        atomic_write_text(self.out_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
        self.run_log.close()
        return summary
