"""Pruning an LM (paper 002): criterion x method x schedule, to a target size, fine-tuned.

    method      unstructured  weights of the block Linears (the mask engine's granularity and
                              distribution: element / RxC / row, global / layer)
                structured    attention heads and FFN units (`structures`; or whole blocks)
                lowrank       every block Linear factorized by truncated SVD, rank components
                              pruned (paper 002's incrementally shrinkable low-rank variant)
    criterion   magnitude | taylor (|w dL/dw| over `criterion_batches` batches, Molchanov et
                al. 2019) | wanda (|w| x input norm, Sun et al. 2023) | random
    schedule    one-shot      prune to the target at step 0, then fine-tune every step
                cubic/linear  Zhu & Gupta (2017): the sparsity ramps from 0 to the target over
                              the first `ramp_fraction` of the steps, pruning every
                              `prune_every` steps (re-scored each time; pruned units stay
                              pruned), then fine-tuning at the target. Same step budget as
                              one-shot.

The target is `target_params` (non-zero parameters of the whole LM, embeddings included: a
masked model's size counts the weights its mask keeps; a shrunk one's its parameters) or
`sparsity` (of the pruned scope). Units (heads, FFN units, ranks) are chosen by their mean
weight score, the budget counts their weights; their biases follow them, so a structured
target is met to within those biases (see sprune.lm.structure).

The run is one Trainer run (resumable; a finished one is reused) with a callback that
re-prunes on schedule and keeps pruned weights at zero (`HardMask`). Incremental low-rank runs
also save the LM each time it first gets below a size of `snapshots` (any of them can be
exported: `sprune lm shrink`).

Run folder: finetune/ (the Trainer's), mask/ (the final mask), final/ (masked LM folder),
shrunk/ (structured and lowrank: the smaller dense LM), snapshots/<params>/ and outcome.json.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader

from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.lm.checkpoint import save_lm
from sprune.lm.dataset import collate_sentences
from sprune.lm.lowrank import factorize
from sprune.lm.model import TransformerLM
from sprune.lm.shrink import shrink
from sprune.lm.structure import UnitMap
from sprune.lm.train import LMData, make_trainer
from sprune.prune.apply import HardMask, zero_pruned
from sprune.prune.methods.base import build_criterion, task_loss
from sprune.prune.mask import Mask
from sprune.prune.schedule import Incremental, OneShot
from sprune.prune.scope import resolve_scope
from sprune.prune.select import check_sparsity, select_mask
from sprune.prune.statistics import score_parameters
from sprune.training import (Callback, TrainConfig, Trainer, distributed, move_to_device,
                             planned_steps)

METHODS = ("unstructured", "structured", "lowrank")
LM_SCHEDULES = ("one-shot", "cubic", "linear")


def _finetune_defaults() -> TrainConfig:
    return TrainConfig(max_steps=300, batch_size=32, lr=5e-4, weight_decay=0.01,
                       warmup_ratio=0.0, eval_every=100, save_every=100, log_every=20,
                       metric="ppl", metric_mode="min")


@dataclass
class LMPruneConfig:
    """conf/lm/prune_*.yaml (see the module docstring)."""

    method: str = "unstructured"
    criterion: str = "magnitude"
    schedule: str = "one-shot"
    target_params: int | None = None
    sparsity: float | None = None
    distribution: Literal["global", "layer", "parameter"] = "global"   # unstructured
    granularity: str = "element"                  # unstructured: element | row | RxC
    structures: list[str] = field(default_factory=lambda: ["heads", "ffn"])   # structured
    initial_rank: str | int = "neutral"           # lowrank: neutral | full | a rank
    criterion_batches: int = 8       # training batches a data-driven criterion sees per scoring
    prune_every: int = 10            # incremental: steps between pruning steps
    ramp_fraction: float = 0.75      # incremental: share of the steps over which it ramps
    snapshots: list[int] = field(default_factory=list)
    seed: int = 0                    # random criterion
    train: TrainConfig = field(default_factory=_finetune_defaults)
    max_len: int = 128
    eval_batch_size: int = 64
    dev_lines: int | None = None

    def check(self) -> None:
        """Refuse a bad combination in one line before any data is loaded."""
        if self.method not in METHODS:
            raise UserError(f"unknown LM pruning method '{self.method}'; known: "
                            f"{', '.join(METHODS)}")
        if self.schedule not in LM_SCHEDULES:
            raise UserError(f"unknown sparsity schedule '{self.schedule}'; known: "
                            f"{', '.join(LM_SCHEDULES)}")
        build_criterion(self.criterion)
        if (self.target_params is None) == (self.sparsity is None):
            raise UserError("give exactly one of target_params (an LM size in parameters) and "
                            "sparsity (of the pruned scope)")
        if self.sparsity is not None:
            check_sparsity(self.sparsity)
        if self.method != "unstructured" and self.granularity != "element":
            raise UserError(f"granularity '{self.granularity}' is for method unstructured; "
                            f"{self.method} prunes whole units")
        if self.criterion_batches < 1:
            raise UserError("criterion_batches must be >= 1")
        if self.prune_every < 1 or not 0 < self.ramp_fraction <= 1:
            raise UserError("prune_every must be >= 1 and ramp_fraction in (0, 1]")


# -- what is pruned ------------------------------------------------------------------------

class Selector:
    """How one method turns per-weight scores into a parameter mask at a scope sparsity.

    state: the unit keep vectors (unit methods) or the parameter mask (unstructured): what
    the next, sparser selection must keep pruned, and what a resumed run restores.
    """

    def __init__(self, model: TransformerLM, config: LMPruneConfig) -> None:
        self.config = config
        self.units: UnitMap | None = None
        if config.method == "unstructured":
            self.scored = resolve_scope(model, preset="transformer",
                                        groups=model.parameter_groups())
            self.scope_size = sum(dict(model.named_parameters())[n].numel() for n in self.scored)
        else:
            kinds = ["rank"] if config.method == "lowrank" else list(config.structures)
            self.units = UnitMap(model, kinds)
            self.scored = self.units.scored_parameters
            self.scope_size = self.units.scope_size()
        self.total = model.num_parameters()

    def select(self, scores: dict[str, torch.Tensor], sparsity: float, previous: Any
               ) -> tuple[Mask, Any]:
        if self.units is None:
            mask = select_mask(scores, sparsity, distribution=self.config.distribution,
                               granularity=self.config.granularity, previous=previous)
            return mask, mask
        keep = self.units.select(scores, sparsity, previous)
        return self.units.expand(keep), keep

    def size(self, mask: Mask) -> int:
        """Parameters the LM keeps under `mask` (its pruned entries no longer count)."""
        return self.total - (mask.numel() - mask.num_kept())

    def sparsity_for(self, target_params: int) -> float:
        """The scope sparsity that brings the LM to about `target_params` parameters."""
        fixed = self.total - self.scope_size
        if target_params >= self.total:
            raise UserError(f"target_params {target_params:,} is not below the LM's size "
                            f"({self.total:,} parameters); give a smaller target")
        if target_params <= fixed:
            raise UserError(f"target_params {target_params:,} is below what {self.config.method} "
                            f"pruning cannot remove ({fixed:,} parameters: embeddings, output "
                            "layer, norms, biases); give a larger target")
        return 1.0 - (target_params - fixed) / self.scope_size


def criterion_batches(data: LMData, config: LMPruneConfig, device: torch.device) -> list[Any]:
    """The first `criterion_batches` batches of a fixed shuffle of the training text: the
    same batches at every scoring, drawn without touching the trainer's RNG or data order."""
    generator = torch.Generator().manual_seed(config.train.seed + 7919)
    loader = DataLoader(data.train, batch_size=config.train.batch_size, shuffle=True,
                        generator=generator, collate_fn=collate_sentences)
    out = []
    for batch in loader:
        out.append(move_to_device(batch, device))
        if len(out) == config.criterion_batches:
            break
    return out


class LMPruneCallback(Callback):
    """Prunes on schedule inside the fine-tuning run and keeps pruned weights at zero."""

    name = "lm_prune"

    def __init__(self, selector: Selector, schedule: OneShot | Incremental,
                 score: Any, snapshot: Any = None) -> None:
        self.selector, self.schedule, self.score, self.snapshot = selector, schedule, score, snapshot
        self.state: Any = None
        self.mask: Mask | None = None
        self.sparsity = 0.0
        self.history: list[dict[str, Any]] = []
        self._hard: HardMask | None = None

    def _apply(self, trainer: Trainer) -> None:
        if self._hard is not None:
            self._hard.detach()
        zero_pruned(trainer.model, self.mask)
        self._hard = HardMask(trainer.model, self.mask).attach(trainer.optimizer)

    def _prune(self, trainer: Trainer, sparsity: float) -> None:
        scores = self.score(trainer.model)
        self.mask, self.state = self.selector.select(scores, sparsity, self.state)
        distributed.check_same_tensors(self.mask.values(), "the LM pruning mask")
        self.sparsity = sparsity
        self._apply(trainer)
        size = self.selector.size(self.mask)
        self.history.append({"step": trainer.step, "sparsity": sparsity, "params": size})
        trainer.log("prune", sparsity=sparsity, params=size)
        if self.snapshot is not None:
            self.snapshot(trainer.model, self.mask, size, trainer.step)

    def on_train_start(self, trainer: Trainer) -> None:
        if self.mask is not None:       # resumed: the checkpoint's mask
            self._apply(trainer)
            return
        target = self.schedule.sparsity_at(trainer.step)
        if target > 0:
            self._prune(trainer, target)

    def on_step_end(self, trainer: Trainer) -> None:
        if not isinstance(self.schedule, Incremental) or not self.schedule.is_prune_step(trainer.step):
            return
        target = self.schedule.sparsity_at(trainer.step)
        if target > self.sparsity:
            self._prune(trainer, target)

    def on_train_end(self, trainer: Trainer) -> None:
        if self._hard is not None:
            self._hard.detach()

    def state_dict(self) -> dict[str, Any]:
        if self.mask is None:
            return {}
        state = self.state if isinstance(self.state, dict) else dict(self.state.items())
        return {"mask": dict(self.mask.items()), "state": dict(state),
                "sparsity": self.sparsity, "history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.mask = Mask(state["mask"])
        units = self.selector.units is not None
        self.state = dict(state["state"]) if units else Mask(state["state"])
        self.sparsity, self.history = float(state["sparsity"]), list(state["history"])


def make_schedule(config: LMPruneConfig, sparsity: float, steps: int) -> OneShot | Incremental:
    if config.schedule == "one-shot":
        return OneShot(sparsity)
    ramp = max(1, math.floor(config.ramp_fraction * steps))
    every = min(config.prune_every, ramp)
    return Incremental(0.0, sparsity, start=0, steps=max(1, ramp // every), every=every,
                       power=1 if config.schedule == "linear" else 3)


def prune_lm(dense: TransformerLM, config: LMPruneConfig, data: LMData, out_dir: Path,
             vocab_file: Path, resume: bool = True, info: dict[str, Any] | None = None
             ) -> dict[str, Any]:
    """Prune `dense` as `config` says and fine-tune it in `out_dir`; returns the outcome."""
    from sprune.lm.metrics import flops_per_token

    config.check()
    outcome_path = out_dir / "outcome.json"
    if outcome_path.is_file() and (out_dir / "final").is_dir():
        return json.loads(outcome_path.read_text())
    model = dense
    if config.method == "lowrank":
        model = factorize(dense, config.initial_rank)
    selector = Selector(model, config)
    sparsity = (selector.sparsity_for(config.target_params) if config.target_params is not None
                else config.sparsity)
    check_sparsity(sparsity)

    def score(m: TransformerLM) -> dict[str, torch.Tensor]:
        criterion = build_criterion(config.criterion, config.seed)
        needs_data = criterion.needs_gradients or criterion.needs_activations
        batches = (criterion_batches(data, config, next(m.parameters()).device)
                   if needs_data else None)
        return score_parameters(criterion, m, selector.scored, batches, task_loss)

    snapshot = None
    pending = sorted((int(s) for s in config.snapshots), reverse=True)
    if pending:
        def snapshot(m: TransformerLM, mask: Mask, size: int, step: int) -> None:
            while pending and size <= pending[0]:
                target = pending.pop(0)
                folder = out_dir / "snapshots" / str(target)
                if not folder.is_dir():
                    exported = _export(m, mask, config)
                    save_lm(folder, exported.cpu(), vocab_file,
                            info={"snapshot_of": str(out_dir), "params": size,
                                  "step": step})

    schedule = make_schedule(config, sparsity, planned_steps(config.train, len(data.train)))
    callback = LMPruneCallback(selector, schedule, score, snapshot)
    trainer = make_trainer(model, data, config.train, out_dir / "finetune",
                           config.eval_batch_size, [callback])
    summary = trainer.fit(resume=resume)
    model = model.cpu().eval()
    mask = callback.mask if callback.mask is not None else Mask.ones_like(model, selector.scored)
    mask.save(out_dir / "mask")
    record = {"pruning": dataclasses.asdict(config), "history": callback.history,
              **(info or {})}
    save_lm(out_dir / "final", model, vocab_file, info=record)
    size = selector.size(mask)
    flops = flops_per_token(model)
    if config.method != "unstructured":
        small = shrink(model, mask).eval()
        save_lm(out_dir / "shrunk", small, vocab_file, info=record)
        size, flops = small.num_parameters(), flops_per_token(small)
    outcome = {"kind": "pruned", "method": config.method, "criterion": config.criterion,
               "schedule": config.schedule, "target_params": config.target_params,
               "scope_sparsity": sparsity, "params": size, "total_params": model.num_parameters(),
               "flops_per_token": flops, "dev": summary["final_metrics"],
               "steps": summary["steps"], "wall_seconds": summary["wall_seconds"],
               **(info or {})}
    atomic_write_text(outcome_path, json.dumps(outcome, indent=1) + "\n")
    return outcome


def _export(model: TransformerLM, mask: Mask, config: LMPruneConfig) -> TransformerLM:
    """The LM as it stands under `mask`: shrunk for unit methods, masked for unstructured."""
    if config.method == "unstructured":
        copy = TransformerLM(model.config).to(model.output.weight.device)
        copy.load_state_dict(model.state_dict())
        zero_pruned(copy, mask)
        return copy.eval()
    return shrink(model, mask).eval()
