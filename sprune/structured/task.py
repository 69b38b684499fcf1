"""The Trainer-facing task of task-agnostic structured pruning (paper 004).

    task = StructuredPruningTask(upstream, config, total_steps)   # teacher = a frozen copy
    trainer = Trainer(task, audio_set, collate_audio, train_config, out_dir,
                      callbacks=[SaveMasks()])
    trainer.fit()                                  # writes <out_dir>/masks at the end

`forward(batch)` (batch: "wavs" [B, T], "lengths" [B]) returns the loss of Eq. 5: the
layer-to-layer distillation loss of the masked student against the frozen teacher plus the
Lagrangian term lambda_1 (p_hat - p) + lambda_2 (p_hat - p)^2, where p_hat is the expected
sparsity of the gates and p the target, ramped from 0 over the first `target_ramp_ratio` of
`total_steps`. `optimizer_groups` gives the Trainer's AdamW four kinds of groups: student
and projection weights (scheduled learning rate, weight decay on matrices), the gates'
log_alphas (`mask_lr`, fixed, no decay) and the lambdas (`lambda_lr`, fixed, no decay,
ascended through a reversed gradient).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from sprune.config import from_dict
from sprune.errors import UserError
from sprune.structured.distill import (LayerDistiller, check_teacher_layers,
                                       default_teacher_layers)
from sprune.structured.hard_concrete import BETA
from sprune.structured.mask_store import RUN_MASKS_DIR, save_masks
from sprune.structured.masked import MaskedUpstream
from sprune.structured.sparsity import (TARGET_RAMP_RATIO, LagrangianPenalty, ParameterBudget,
                                        target_sparsity_at)
from sprune.structured.structures import Structures
from sprune.training import Callback, Trainer, param_groups
from sprune.upstream.model import UpstreamModel


@dataclass
class StructuredPruningConfig:
    """Settings of structured L0 pruning (a YAML mapping; see `from_dict`)."""

    structures: Structures = field(default_factory=Structures)
    target_sparsity: float = 0.8        # fraction of the prunable scope removed (paper: 0.8)
    target_ramp_ratio: float = TARGET_RAMP_RATIO  # target ramps up over this share of steps
    beta: float = BETA                  # hard-concrete temperature
    straight_through: bool = True       # Eq. 4 straight-through estimator
    init_keep_prob: float = 0.9         # initial P(gate != 0)
    mask_lr: float = 0.02               # fixed learning rate of the log_alphas
    lambda_lr: float = 0.02             # fixed learning rate (ascent) of the lambdas
    teacher_layers: list[int] | None = None  # default: 4 evenly spaced, ending at the last

    @classmethod
    def from_dict(cls, data: dict[str, Any],
                  where: str = "structured") -> "StructuredPruningConfig":
        """Build and check a config; unknown keys and structure names are `UserError`s."""
        data = dict(data)
        structures = Structures.parse(data.pop("structures", {}), f"{where}: structures")
        config = dataclasses.replace(from_dict(cls, data, where), structures=structures)
        return config.validate(where)

    def validate(self, where: str = "structured") -> "StructuredPruningConfig":
        checks = [("target_ramp_ratio", 0.0 <= self.target_ramp_ratio <= 1.0, "in [0, 1]"),
                  ("beta", self.beta > 0, "positive"),
                  ("init_keep_prob", 0.0 < self.init_keep_prob < 1.0, "in (0, 1)"),
                  ("mask_lr", self.mask_lr > 0, "positive"),
                  ("lambda_lr", self.lambda_lr > 0, "positive")]
        for key, ok, rule in checks:
            if not ok:
                raise UserError(f"{where}: {key} is {getattr(self, key)}; it must be {rule}")
        return self


class StructuredPruningTask(nn.Module):
    """Distillation + Lagrangian sparsity control over a `MaskedUpstream` (module docstring).

    The teacher (default: a frozen copy of `upstream` taken before masking) is not a
    submodule: it stays out of `parameters()` and checkpoints, and follows `.to()`.
    """

    def __init__(self, upstream: UpstreamModel, config: StructuredPruningConfig,
                 total_steps: int, teacher: UpstreamModel | None = None,
                 where: str = "structured") -> None:
        super().__init__()
        if total_steps < 1:
            raise ValueError(f"total_steps must be positive, got {total_steps}")
        if teacher is upstream:
            raise ValueError("the teacher must be a separate model from the student")
        self.config = config
        self.total_steps = total_steps
        teacher = copy.deepcopy(upstream) if teacher is None else teacher
        teacher.eval().requires_grad_(False)
        self._teacher = (teacher,)  # a tuple keeps it out of the submodules
        self.budget = ParameterBudget(upstream.config, config.structures)
        self.budget.check_target(config.target_sparsity, f"{where}: target_sparsity")
        self.student = MaskedUpstream(upstream, config.structures, beta=config.beta,
                                      straight_through=config.straight_through,
                                      init_keep_prob=config.init_keep_prob)
        layers = config.teacher_layers or default_teacher_layers(teacher.config.num_layers)
        layers = check_teacher_layers(layers, teacher.config.num_layers,
                                      upstream.config.num_layers, f"{where}: teacher_layers")
        self.distiller = LayerDistiller(layers, upstream.config.embed_dim,
                                        teacher.config.embed_dim)
        self.lagrangian = LagrangianPenalty()
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    @property
    def teacher(self) -> UpstreamModel:
        return self._teacher[0]

    def _apply(self, fn: Callable[[Tensor], Tensor],
               recurse: bool = True) -> "StructuredPruningTask":
        super()._apply(fn, recurse)
        self._teacher[0]._apply(fn, recurse)
        return self

    def target_sparsity(self) -> Tensor:
        """The target after `steps_done` updates, a float32 scalar on the counter's device,
        computed without reading the counter (no host sync at every step on a GPU)."""
        return target_sparsity_at(self.steps_done, self.total_steps, self.config.target_sparsity,
                                  self.config.target_ramp_ratio).float()

    def forward(self, batch: dict[str, Any]) -> dict[str, Tensor]:
        wavs, lengths = batch["wavs"], batch.get("lengths")
        with torch.no_grad():
            teacher_out = self.teacher(wavs, lengths)
        student_out = self.student(wavs, lengths)
        distill = self.distiller(student_out.hidden_states, teacher_out.hidden_states,
                                 student_out.lengths if lengths is not None else None)
        expected = self.budget.expected_sparsity(self.student.gates.probabilities())
        target = self.target_sparsity()
        penalty = self.lagrangian(expected, target)
        if self.training and torch.is_grad_enabled():
            self.steps_done += 1
        return {"loss": distill.loss + penalty, "distill": distill.loss.detach(),
                "lagrangian": penalty.detach(), "expected_sparsity": expected.detach(),
                "target_sparsity": target,
                "lambda_1": self.lagrangian.lambda_1.detach(),
                "lambda_2": self.lagrangian.lambda_2.detach()}

    def optimizer_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups for the Trainer (see the module docstring)."""
        groups = param_groups(self.student.upstream, weight_decay)
        groups += param_groups(self.distiller, weight_decay)
        groups.append({"params": list(self.student.gates.parameters()), "weight_decay": 0.0,
                       "lr": self.config.mask_lr, "fixed_lr": self.config.mask_lr})
        groups.append({"params": list(self.lagrangian.parameters()), "weight_decay": 0.0,
                       "lr": self.config.lambda_lr, "fixed_lr": self.config.lambda_lr})
        return [group for group in groups if group["params"]]


class SaveMasks(Callback):
    """At the end of training, write the task's masks dir to `<out_dir>/masks` (or `directory`)."""

    name = "save_masks"

    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory

    def on_train_end(self, trainer: Trainer) -> None:
        task = trainer.model
        if not isinstance(task, StructuredPruningTask):
            raise TypeError("SaveMasks needs a StructuredPruningTask as the trainer's model")
        directory = self.directory or trainer.out_dir / RUN_MASKS_DIR
        save_masks(task.student, directory, steps=int(task.steps_done))

