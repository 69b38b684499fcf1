"""Layer-to-layer distillation with a learned teacher -> student layer mapping (paper 004,
Eq. 5, following Xia et al. 2022).

The teacher is the frozen original upstream, the student the masked one. For a set of
teacher layers t_1 < ... < t_n (indices into `hidden_states`, 1 = first transformer layer)
each has its own linear projection W_i (student dim -> teacher dim, initialised to the
identity, zero bias), and the distance to student layer k is

    d(i, k) = MSE(W_i h_s^k, h_t^{t_i})   over the valid frames and all dims.

The mapping m is recomputed at every step, without gradient, by the rule of Xia et al.'s
released code (an ordered search from the top):

    m(n)  = argmin_{k in [n, L_s]}        d(n, k)
    m(i)  = argmin_{k in [i, m(i+1) - 1]} d(i, k)     for i = n-1, ..., 1

i.e. each teacher layer takes the student layer closest to it among those strictly below
the layer matched to the teacher layer above, leaving enough layers for the teacher layers
still below it (so matched student layers are strictly increasing). The loss is
sum_i d(i, m(i)), with gradient to the student and the projections.

The search runs on the distances' device (`ordered_alignment`) and the matched layers are
gathered by index: a training step never reads the mapping on the host (on a GPU that would
wait for the whole forward at every step). `DistillationOutput.mapping` reads it on demand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from sprune.errors import UserError

DEFAULT_TEACHER_LAYER_COUNT = 4  # Xia et al.: every third layer of a 12-layer teacher


def default_teacher_layers(num_layers: int, count: int = DEFAULT_TEACHER_LAYER_COUNT
                           ) -> list[int]:
    """`count` evenly spaced teacher layers ending at the last: 3, 6, 9, 12 of 12 layers."""
    return sorted({math.ceil(num_layers * (i + 1) / count) for i in range(count)})


def check_teacher_layers(layers: Sequence[int], teacher_layers: int, student_layers: int,
                         where: str = "teacher_layers") -> list[int]:
    layers = list(layers)
    if not layers:
        raise UserError(f"{where}: give at least one teacher layer")
    if sorted(set(layers)) != layers:
        raise UserError(f"{where}: {layers} must be distinct and increasing")
    if layers[0] < 1 or layers[-1] > teacher_layers:
        raise UserError(f"{where}: {layers} must be layers of the {teacher_layers}-layer "
                        f"teacher, 1..{teacher_layers}")
    if len(layers) > student_layers:
        raise UserError(f"{where}: {len(layers)} teacher layers cannot map to distinct layers "
                        f"of a {student_layers}-layer student; name at most {student_layers}")
    return layers


def align_layers(distances: Tensor) -> list[int]:
    """The ordered mapping of the module docstring: distances [n, L_s] (teacher layer i,
    student layer k + 1) -> matched student layers (1-based), strictly increasing."""
    return ordered_alignment(distances).tolist()


def ordered_alignment(distances: Tensor) -> Tensor:
    """`align_layers` as a long tensor [n] on the device of `distances`, computed there
    without reading a value: teacher layer i (0-based) takes the argmin over student layers
    [i + 1, m(i + 1) - 1] (1-based), the first one on ties, as `argmin` over that slice."""
    count, student_layers = distances.shape
    if count > student_layers:
        raise ValueError(f"{count} teacher layers cannot map to {student_layers} student layers")
    layers = torch.arange(1, student_layers + 1, device=distances.device)
    upper = torch.full((), student_layers + 1, dtype=torch.long, device=distances.device)
    mapping = []
    for i in reversed(range(count)):
        lowest = i + 1
        allowed = (layers >= lowest) & (layers < upper)
        # outside the window: +inf; a window all at +inf picks its first layer, like argmin
        # of the slice (the clamp: argmin of the whole row then finds an earlier +inf)
        row = distances[i].masked_fill(~allowed, float("inf"))
        upper = (torch.argmin(row) + 1).clamp(min=lowest)
        mapping.append(upper)
    return torch.stack(mapping[::-1])


@dataclass
class DistillationOutput:
    """loss: scalar; layers: long [n], the matched student layer (1-based) per teacher layer,
    on the device; distances: [n, L_s]."""

    loss: Tensor
    layers: Tensor
    distances: Tensor

    @property
    def mapping(self) -> list[int]:
        """`layers` as a list (a read of the device: for reports and tests, not the step)."""
        return self.layers.tolist()


def _masked_mse(prediction: Tensor, target: Tensor, frames: Tensor | None) -> Tensor:
    """Mean squared error over valid frames: prediction [..., B, T, D] (leading dims: one
    error each), target [B, T, D]; frames [B, T]. Computed in float32 whatever the inputs
    (bfloat16 under `train.precision: bf16`)."""
    squared = (prediction.float() - target.float()).pow(2)
    if frames is None:
        return squared.mean(dim=(-3, -2, -1))
    weights = frames.to(squared.dtype).unsqueeze(-1)
    return ((squared * weights).sum(dim=(-3, -2, -1))
            / (weights.sum() * squared.shape[-1]).clamp(min=1.0))


class LayerDistiller(nn.Module):
    """Learned layer mapping and projections (see the module docstring)."""

    def __init__(self, teacher_layers: Sequence[int], student_dim: int,
                 teacher_dim: int | None = None) -> None:
        super().__init__()
        teacher_dim = student_dim if teacher_dim is None else teacher_dim
        self.teacher_layers = list(teacher_layers)
        self.projections = nn.ModuleList(nn.Linear(student_dim, teacher_dim)
                                         for _ in self.teacher_layers)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for projection in self.projections:
            nn.init.eye_(projection.weight)
            nn.init.zeros_(projection.bias)

    def forward(self, student: Sequence[Tensor], teacher: Sequence[Tensor],
                frame_lengths: Tensor | None = None) -> DistillationOutput:
        """student / teacher: `hidden_states` lists ([B, T, D] each, index 0 = transformer
        input); frame_lengths: [B] valid frames or None (all valid)."""
        frames = None
        if frame_lengths is not None:
            steps = torch.arange(student[0].shape[1], device=student[0].device)
            frames = steps[None, :] < frame_lengths.to(steps.device)[:, None]
        stacked = torch.stack(list(student[1:]))          # [L_s, B, T, D]
        targets = [teacher[t].detach() for t in self.teacher_layers]
        with torch.no_grad():   # each projection over all student layers in one product
            distances = torch.stack([_masked_mse(projection(stacked), target, frames)
                                     for projection, target in zip(self.projections, targets)])
        layers = ordered_alignment(distances)
        matched = stacked.index_select(0, layers - 1)      # [n, B, T, D], by index on device
        loss = sum(_masked_mse(projection(h), target, frames)
                   for projection, target, h in zip(self.projections, targets, matched))
        return DistillationOutput(loss=loss, layers=layers, distances=distances)
