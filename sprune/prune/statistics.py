"""Score a model's parameters with any criterion, running the data passes it needs.

`score_parameters` is the one entry point for every caller (the acoustic pruning methods,
language-model pruning): data-free criteria (magnitude, random) score the weights as they
are; taylor runs forward + backward on each batch; wanda runs forward passes only. The
passes leave no trace on the model or on a training run around them: the model runs in
eval mode (no dropout, no running-statistics updates) and gets its modes back, every
parameter's `.grad` is put back (None stays None), `requires_grad` is never changed, the
global random number generators (torch, CUDA, Python, NumPy) are restored, and hooks are
removed, also when a pass raises. So PARP can re-prune mid-training by taylor or wanda and
a killed run still resumes to the result of an uninterrupted one.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from sprune.errors import UserError
from sprune.prune.criteria import Criterion
from sprune.training import distributed, move_to_device


@contextmanager
def _same_random_state() -> Iterator[None]:
    """Restore the global RNGs on exit, so a collate or forward that draws cannot shift the
    random stream of the training run around the scoring."""
    torch_state = torch.get_rng_state()
    cuda_states = (torch.cuda.get_rng_state_all()
                   if torch.cuda.is_available() and torch.cuda.is_initialized() else None)
    python_state = random.getstate()
    numpy_state = np.random.get_state()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; every submodule's own flag back on exit (a model may keep parts in
    eval mode while training, e.g. a frozen feature encoder, so `train(mode)` is not enough)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextmanager
def _grads_kept(params: Sequence[nn.Parameter]) -> Iterator[None]:
    """Each parameter's `.grad` object is put back on exit (None where it was None)."""
    saved = [p.grad for p in params]
    try:
        yield
    finally:
        for p, grad in zip(params, saved):
            p.grad = grad


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def score_parameters(criterion: Criterion, model: nn.Module, names: Sequence[str],
                     batches: Iterable[Any] | None,
                     loss_of: Callable[[nn.Module, Any], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Scores (name -> float32 tensor, the parameter's shape) of `names` by `criterion`.

    Data-free criteria (magnitude, random) ignore `batches` and `loss_of`. Taylor: for each
    batch, `loss_of(model, batch).backward()` (a scalar loss), then `criterion.accumulate`;
    a scored parameter the loss does not reach gets gradient 0, a frozen one
    (`requires_grad` False) is a UserError. Wanda: forward passes only (`torch.no_grad`),
    `loss_of(model, batch)` is called and its result ignored; input norms are gathered by
    the criterion's hooks. Batches are moved to the model's device. The criterion's earlier
    statistics are reset first, so the scores depend on these batches only.

    The model runs in eval mode (no dropout) during the passes and gets its previous
    train/eval modes back; parameters' `.grad` are restored to what they were (None when
    they were None), `requires_grad` flags are untouched, the global RNG states are
    restored and hooks removed, even on error. No batches for a data-driven criterion
    (`batches` None or empty) -> UserError.

    In a distributed run each process passes its share of the batches (every world_size-th)
    and the criterion's statistics are summed over the processes before scoring, so every
    process gets the scores one process would get from all the batches (up to the order of
    floating-point additions) and selects the same mask from them.
    """
    names = list(names)
    params = dict(model.named_parameters())
    for name in names:
        if name not in params:
            raise UserError(f"parameter '{name}' is not in the model; check the pruning scope")
    scoped = {n: params[n] for n in names}
    criterion.reset()
    if not (criterion.needs_gradients or criterion.needs_activations):
        return criterion.scores(scoped, names)
    need_batches = (f"criterion '{criterion.name}' needs training batches: "
                    "criterion_batches >= 1")
    if batches is None:
        raise UserError(need_batches)
    if criterion.needs_gradients:
        frozen = next((n for n in names if not params[n].requires_grad), None)
        if frozen is not None:
            raise UserError(f"criterion '{criterion.name}' needs the gradient of '{frozen}', "
                            "which is frozen (requires_grad is False); exclude it from the "
                            "scope or train it (e.g. freeze_feature_encoder: false)")
    device = _model_device(model)
    seen = 0
    with _same_random_state(), _eval_mode(model), _grads_kept(list(params.values())):
        criterion.attach(model, names)
        try:
            world = distributed.current()
            for index, batch in enumerate(batches):
                seen += 1
                if index % world.world_size != world.rank:
                    continue
                batch = move_to_device(batch, device)
                if criterion.needs_gradients:
                    for p in params.values():
                        p.grad = None
                    with torch.enable_grad():
                        loss_of(model, batch).backward()
                    for p in scoped.values():
                        if p.grad is None:   # not reached by the loss: dL/dw = 0
                            p.grad = torch.zeros_like(p)
                    criterion.accumulate(scoped)
                else:
                    with torch.no_grad():
                        loss_of(model, batch)
        finally:
            criterion.detach()
        if seen == 0:
            raise UserError(need_batches)
        criterion.reduce_across_processes(scoped)
        return criterion.scores(scoped, names)


__all__ = ["score_parameters"]
