"""Pruning criteria: score every weight; a low score means "prune me first".

    magnitude  |w|                                           data-free
    random     uniform noise from a seed (random pruning)    data-free
    taylor     |w * dL/dw| averaged over batches             gradients (Molchanov et al. 2019)
    wanda      |W[i, j]| * ||X_j||_2 of a Linear's inputs     activations (Sun et al. 2023)

Every criterion has the same small interface so that methods can swap them by name:

    criterion = make_criterion("taylor")
    for batch in batches:                  # only criteria with needs_gradients use these
        loss(model, batch).backward()
        criterion.accumulate(model)
    scores = criterion.scores(params, names)   # name -> float32 tensor, the parameter's shape

Criteria with `needs_activations` (wanda) instead `attach(model, names)` forward hooks, see
forward passes, and are `detach()`ed. Callers should not run these loops themselves:
`sprune.prune.statistics.score_parameters` does it for every criterion (eval mode, gradients
and RNG restored, hooks removed even on error). The pruning methods score taylor and wanda
on `criterion_batches` training batches with dropout off: our choice; the papers leave the
number of batches and the model's mode open.

The scores go to `sprune.prune.select`, which turns them into a mask.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from sprune.errors import UserError
from sprune.prune.mask import named_tensors

Scores = dict[str, torch.Tensor]


def _chosen(tensors: Mapping[str, torch.Tensor], names: Sequence[str] | None) -> list[str]:
    chosen = list(tensors) if names is None else list(names)
    for name in chosen:
        if name not in tensors:
            raise UserError(f"parameter '{name}' is not in the model; check the pruning scope")
    return chosen


class Criterion:
    """Base class: `scores(params, names)` -> name -> float32 score tensor (CPU or the
    parameter's device), same shape as the parameter."""

    name = ""
    needs_gradients = False     # scores need `accumulate()` after loss.backward() per batch
    needs_activations = False   # scores need forward passes between `attach()` and `detach()`

    def reset(self) -> None:
        """Forget the statistics collected so far (no-op for data-free criteria)."""

    def accumulate(self, model: nn.Module | Mapping[str, torch.Tensor]) -> None:
        """Collect statistics after a backward pass (no-op for data-free criteria)."""

    def attach(self, model: nn.Module, names: Sequence[str]) -> "Criterion":
        """Start collecting statistics of `names` in forward passes of `model` (hooks);
        no-op for criteria that do not need activations."""
        return self

    def detach(self) -> None:
        """Remove what `attach` installed; safe to call more than once."""

    def reduce_across_processes(self, params: Mapping[str, torch.Tensor]) -> None:
        """Add up the statistics the processes of a distributed run collected on their
        shares of the batches (`params`: the scored parameters), so every process then
        scores as one process that saw all the batches (no-op for data-free criteria)."""

    def scores(self, params: nn.Module | Mapping[str, torch.Tensor],
               names: Sequence[str] | None = None) -> Scores:
        raise NotImplementedError


class Magnitude(Criterion):
    """|w|: the unstructured magnitude pruning (UMP) criterion of PARP, OMP, IMP and MPI."""

    name = "magnitude"

    def scores(self, params: nn.Module | Mapping[str, torch.Tensor],
               names: Sequence[str] | None = None) -> Scores:
        tensors = named_tensors(params)
        return {n: tensors[n].detach().abs().float() for n in _chosen(tensors, names)}


class Random(Criterion):
    """Uniform scores in [0, 1) from a seeded generator: random pruning (RP).

    The scores depend only on the seed, the parameter order and shapes (drawn on the CPU),
    so the same seed gives the same mask on any device.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def scores(self, params: nn.Module | Mapping[str, torch.Tensor],
               names: Sequence[str] | None = None) -> Scores:
        tensors = named_tensors(params)
        generator = torch.Generator().manual_seed(self.seed)
        return {n: torch.rand(tensors[n].shape, generator=generator)
                for n in _chosen(tensors, names)}


class TaylorFirstOrder(Criterion):
    """First-order Taylor importance |w * dL/dw|, averaged over the batches seen
    (Molchanov et al. 2019, "Importance Estimation for Neural Network Pruning", per weight).

    Call `accumulate(model)` after each `loss.backward()`; the per-batch |w * grad| is
    added up (so positive and negative gradients of different batches do not cancel) and
    `scores()` returns the sum divided by the number of batches: for a parameter of shape S
    a float32 tensor of shape S. `names` restricts which parameters are tracked (default:
    all that have a gradient). The pruning methods use `criterion_batches` training batches,
    with the model in eval mode (no dropout).
    """

    name = "taylor"
    needs_gradients = True

    def __init__(self, names: Sequence[str] | None = None) -> None:
        self.names = None if names is None else list(names)
        self.batches = 0
        self._sums: dict[str, torch.Tensor] = {}

    def reset(self) -> None:
        self.batches = 0
        self._sums = {}

    def accumulate(self, model: nn.Module | Mapping[str, torch.Tensor]) -> None:
        tensors = named_tensors(model)
        chosen = _chosen(tensors, self.names)
        for name in chosen:
            param = tensors[name]
            if param.grad is None:
                if self.names is None:
                    continue
                raise RuntimeError(f"Taylor criterion: parameter '{name}' has no gradient; "
                                   "call accumulate() after loss.backward()")
            contribution = (param.detach() * param.grad.detach()).abs().float()
            if name in self._sums:
                self._sums[name] += contribution
            else:
                self._sums[name] = contribution.clone()
        self.batches += 1

    def reduce_across_processes(self, params: Mapping[str, torch.Tensor]) -> None:
        from sprune.training import distributed

        if not distributed.is_distributed():
            return
        for name, param in params.items():   # a process without batches adds zeros
            if name not in self._sums:
                self._sums[name] = torch.zeros_like(param, dtype=torch.float32)
        distributed.all_reduce_sum_(self._sums[name] for name in params)
        self.batches = int(distributed.sum_over_processes([self.batches])[0])

    def scores(self, params: nn.Module | Mapping[str, torch.Tensor] | None = None,
               names: Sequence[str] | None = None) -> Scores:
        if self.batches == 0:
            raise UserError("the Taylor criterion saw no batches; give it at least one "
                            "batch of training data (criterion batches >= 1)")
        chosen = list(self._sums) if names is None else list(names)
        missing = [n for n in chosen if n not in self._sums]
        if missing:
            raise RuntimeError(f"Taylor criterion: no gradient was accumulated for "
                               f"'{missing[0]}'; is it frozen?")
        return {n: self._sums[n] / self.batches for n in chosen}


def _owner(model: nn.Module, name: str) -> tuple[str, nn.Module, str]:
    """(module name, module, attribute) of the parameter called `name` in `model`."""
    module_name, _, attribute = name.rpartition(".")
    try:
        return module_name, model.get_submodule(module_name), attribute
    except AttributeError:
        raise UserError(f"parameter '{name}' is not in the model; check the pruning scope"
                        ) from None


class Wanda(Criterion):
    """Pruning by weights and activations (Sun et al. 2023, "A Simple and Effective Pruning
    Approach for Large Language Models"): the score of weight W[i, j] of an `nn.Linear`
    (weight [out, in]) is |W[i, j]| * ||X_j||_2, where X [N, in] stacks every input row the
    layer saw during the forward passes between `attach` and `detach` (N = batches x
    positions; padded positions count too: the training batches are length-bucketed).

    Only the weight of an `nn.Linear` that is called as a module (its forward pre-hook
    must fire) can be scored; a conv kernel, a bias or a norm scale is a UserError naming
    it. The paper compares weights within each output row; here the scores go to the
    usual selector (`distribution: parameter` is the closest to the paper). The pruning
    methods use `criterion_batches` training batches, with the model in eval mode.
    """

    name = "wanda"
    needs_activations = True

    def __init__(self) -> None:
        self._squares: dict[str, torch.Tensor] = {}   # module name -> sum of X_j^2, [in]
        self._rows: dict[str, int] = {}               # module name -> rows of X seen
        self._modules: dict[str, str] = {}            # parameter name -> module name
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def reset(self) -> None:
        self._squares = {}
        self._rows = {m: 0 for m in self._rows}

    def attach(self, model: nn.Module, names: Sequence[str]) -> "Wanda":
        self.detach()
        modules: dict[str, nn.Module] = {}
        owners: dict[str, str] = {}
        for name in names:
            module_name, module, attribute = _owner(model, name)
            if not isinstance(module, nn.Linear) or attribute != "weight":
                what = (f"the {attribute} of an nn.Linear" if isinstance(module, nn.Linear)
                        else f"a parameter of {type(module).__name__}")
                raise UserError(f"criterion 'wanda' scores nn.Linear weights only; '{name}' "
                                f"is {what}: exclude it from the scope or use another "
                                "criterion")
            modules[module_name] = module
            owners[name] = module_name
        self._modules = owners
        self._squares = {}
        self._rows = {m: 0 for m in modules}
        for module_name, module in modules.items():
            self._handles.append(module.register_forward_pre_hook(
                lambda mod, args, kwargs, key=module_name: self._record(
                    key, args[0] if args else kwargs["input"]), with_kwargs=True))
        return self

    def _record(self, key: str, x: torch.Tensor) -> None:
        rows = x.detach().reshape(-1, x.shape[-1]).float()
        squares = rows.pow(2).sum(0)
        if key in self._squares:
            self._squares[key] += squares
        else:
            self._squares[key] = squares
        self._rows[key] += rows.shape[0]

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def reduce_across_processes(self, params: Mapping[str, torch.Tensor]) -> None:
        from sprune.training import distributed

        if not distributed.is_distributed():
            return
        modules = sorted(set(self._modules.values()))
        for name, module_name in self._modules.items():   # a process without batches adds 0
            if module_name not in self._squares:
                in_features = params[name].shape[1]
                self._squares[module_name] = torch.zeros(in_features,
                                                         device=params[name].device)
        distributed.all_reduce_sum_(self._squares[m] for m in modules)
        rows = distributed.sum_over_processes([self._rows.get(m, 0) for m in modules])
        self._rows = {m: int(r) for m, r in zip(modules, rows)}

    def scores(self, params: nn.Module | Mapping[str, torch.Tensor],
               names: Sequence[str] | None = None) -> Scores:
        tensors = named_tensors(params)
        chosen = list(self._modules) if names is None else _chosen(tensors, names)
        out: Scores = {}
        for name in chosen:
            if name not in self._modules:
                raise RuntimeError(f"Wanda criterion: '{name}' was not attached; call "
                                   "attach(model, names) with it before the forward passes")
            module_name = self._modules[name]
            if self._rows.get(module_name, 0) == 0:
                raise UserError(f"criterion 'wanda' saw no input of '{module_name}' (for "
                                f"'{name}'): the layer never ran as a module in the forward "
                                "passes; exclude it from the scope or use another criterion")
            norms = self._squares[module_name].sqrt()           # ||X_j||_2, [in]
            weight = tensors[name].detach()
            out[name] = weight.abs().float() * norms.to(weight.device)[None, :]
        return out


CRITERIA: dict[str, type[Criterion]] = {
    Magnitude.name: Magnitude,
    Random.name: Random,
    TaylorFirstOrder.name: TaylorFirstOrder,
    Wanda.name: Wanda,
}


def make_criterion(name: str, **options) -> Criterion:
    """The criterion registered as `name`, built with `options` (e.g. `seed` for random)."""
    if name not in CRITERIA:
        raise UserError(f"unknown pruning criterion '{name}'; known: "
                        f"{', '.join(sorted(CRITERIA))}")
    try:
        return CRITERIA[name](**options)
    except TypeError:
        raise UserError(f"criterion '{name}' does not take options "
                        f"{sorted(options)}; check the criterion options in the config"
                        ) from None
