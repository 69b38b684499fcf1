"""Apply a mask to a model's weights, two ways.

* **Hard** (`HardMask`): pruned weights are zeroed now and stay exactly zero through training.
  Three guards, because each alone leaks: a gradient hook zeroes their gradients (so clipping
  and the optimizer never see them), the optimizer's per-weight state (Adam/AdamW moments,
  SGD momentum) is zeroed where pruned so a stale moment cannot move them, and after every
  optimizer step the weights are zeroed again (weight decay or a foreign optimizer cannot
  bring them back). Used by RP, MPI, OMP, IMP and ticket retraining.
* **PARP-style** (`zero_pruned`): zero the pruned weights at a re-prune point only; they stay
  trainable in between and may regrow (Lai et al. 2021, paper 001).

`weight_sparsity` / `actual_mask` read the sparsity a model really has (exact zeros).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from sprune.prune.mask import Mask, named_tensors


def zero_pruned(model: nn.Module | Mapping[str, torch.Tensor], mask: Mask) -> None:
    """Set the weights `mask` prunes to exactly zero, in place (PARP's re-prune step)."""
    mask.check_fits(model)
    tensors = named_tensors(model)
    with torch.no_grad():
        for name, keep in mask.items():
            param = tensors[name]
            param.masked_fill_(~keep.to(param.device), 0)


def actual_mask(model: nn.Module | Mapping[str, torch.Tensor],
                names: Sequence[str] | None = None) -> Mask:
    """The mask the weights really have: True where a weight is non-zero."""
    return Mask.from_nonzero(model, names)


def weight_sparsity(model: nn.Module | Mapping[str, torch.Tensor],
                    names: Sequence[str] | None = None) -> float:
    """Fraction of exactly-zero weights over `names` (default: every parameter)."""
    tensors = named_tensors(model)
    chosen = list(tensors) if names is None else list(names)
    total = sum(tensors[n].numel() for n in chosen)
    zeros = sum(tensors[n].numel() - int(torch.count_nonzero(tensors[n])) for n in chosen)
    return zeros / total if total else 0.0


class HardMask:
    """Keep the weights a mask prunes at exactly zero while a model trains.

        hard = HardMask(model, mask).attach(optimizer)   # zeroes now, hooks grads and steps
        ... train: loss.backward(); optimizer.step() ...  # after_step() runs after each step
        hard.detach()                                     # remove the hooks

    Without an optimizer passed to `attach`, call `after_step()` after each step yourself.
    """

    def __init__(self, model: nn.Module, mask: Mask) -> None:
        mask.check_fits(model)
        tensors = named_tensors(model)
        self.mask = mask
        self._params = {n: tensors[n] for n in mask}
        self._pruned = {n: ~mask[n].to(tensors[n].device) for n in mask}
        self._handles: list = []
        self._optimizers: list[torch.optim.Optimizer] = []

    def attach(self, optimizer: torch.optim.Optimizer | None = None) -> "HardMask":
        """Zero the pruned weights, mask their gradients, and (given an optimizer) re-zero
        weights and optimizer state after each of its steps."""
        self.detach()
        for name, param in self._params.items():
            if param.requires_grad:
                pruned = self._pruned[name]
                self._handles.append(param.register_hook(
                    lambda grad, pruned=pruned: grad.masked_fill(pruned, 0)))
        if optimizer is not None:
            self._optimizers.append(optimizer)
            self._handles.append(optimizer.register_step_post_hook(
                lambda opt, args, kwargs: self.after_step()))
        self.after_step()
        return self

    def after_step(self) -> None:
        """Zero pruned weights and every optimizer state tensor shaped like them."""
        with torch.no_grad():
            for name, param in self._params.items():
                pruned = self._pruned[name]
                param.masked_fill_(pruned, 0)
                if param.grad is not None:
                    param.grad.masked_fill_(pruned, 0)
                for optimizer in self._optimizers:
                    for value in optimizer.state.get(param, {}).values():
                        if isinstance(value, torch.Tensor) and value.shape == param.shape:
                            value.masked_fill_(pruned, 0)

    def detach(self) -> None:
        """Remove the hooks; the weights keep their current values."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._optimizers = []

    def __enter__(self) -> "HardMask":
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()
