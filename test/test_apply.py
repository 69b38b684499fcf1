"""Applying masks: hard masks survive AdamW, PARP-style zeroing lets weights regrow."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from sprune.errors import UserError
from sprune.prune.apply import HardMask, actual_mask, weight_sparsity, zero_pruned
from sprune.prune.criteria import make_criterion
from sprune.prune.mask import Mask
from sprune.prune.select import select_mask

WEIGHTS = ["0.weight", "2.weight"]


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int,
           after_step=None) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 6, generator=gen)
        y = torch.randn(8, 3, generator=gen)
        optimizer.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        optimizer.step()
        if after_step is not None:
            after_step()


def _magnitude_mask(model: nn.Module, sparsity: float) -> Mask:
    return select_mask(make_criterion("magnitude").scores(model, WEIGHTS), sparsity)


def test_hard_mask_keeps_pruned_weights_zero_through_100_adamw_steps() -> None:
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    _train(model, optimizer, 5)  # optimizer state exists before the mask arrives
    mask = _magnitude_mask(model, 0.6)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    hard = HardMask(model, mask).attach(optimizer)
    _train(model, optimizer, 100)
    params = dict(model.named_parameters())
    for name in WEIGHTS:
        pruned = ~mask[name]
        assert params[name][pruned].eq(0).all(), name
        assert not torch.equal(params[name][~pruned], before[name][~pruned])  # it trained
        state = optimizer.state[params[name]]
        assert state["exp_avg"][pruned].eq(0).all()
        assert state["exp_avg_sq"][pruned].eq(0).all()
        assert state["exp_avg_sq"][~pruned].gt(0).all()
    assert weight_sparsity(model, WEIGHTS) == round(0.6 * 144) / 144
    assert actual_mask(model, WEIGHTS) == mask
    hard.detach()
    _train(model, optimizer, 3)
    assert params["0.weight"][~mask["0.weight"]].ne(0).any()  # hooks really removed


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=0.1, amsgrad=True),
    lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=0.1, nesterov=True),
    lambda p: torch.optim.RMSprop(p, lr=1e-2, momentum=0.5, weight_decay=0.1),  # re-zeroed
], ids=["adam", "sgd", "rmsprop"])
def test_pruned_weights_stay_exactly_zero_with_each_optimizer(make) -> None:
    """Adam and SGD leave zero weights with zero gradients and state at zero (their steps
    skip the re-zeroing); any other optimizer gets the weights re-zeroed after its steps."""
    model = _model()
    optimizer = make(model.parameters())
    _train(model, optimizer, 5)
    mask = _magnitude_mask(model, 0.6)
    HardMask(model, mask).attach(optimizer)
    _train(model, optimizer, 50)
    for name in WEIGHTS:
        weight = model.get_parameter(name)
        assert weight[~mask[name]].eq(0).all() and weight[mask[name]].ne(0).all(), name


def test_gradient_hook_alone_zeroes_pruned_gradients() -> None:
    model = _model()
    mask = _magnitude_mask(model, 0.5)
    with HardMask(model, mask).attach():
        ((model(torch.randn(4, 6)) - 1) ** 2).mean().backward()
        grad = model[0].weight.grad
        assert grad[~mask["0.weight"]].eq(0).all() and grad[mask["0.weight"]].ne(0).any()


def test_stale_adam_moments_move_pruned_weights_unless_zeroed() -> None:
    """Why `after_step` zeroes optimizer state: blocking gradients alone is not enough."""
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, optimizer, 5)
    mask = _magnitude_mask(model, 0.6)
    zero_pruned(model, mask)
    pruned = ~mask["0.weight"]
    model[0].weight.register_hook(lambda grad: grad.masked_fill(pruned, 0))
    _train(model, optimizer, 1)
    assert model[0].weight[pruned].ne(0).any()


def test_parp_style_lets_pruned_weights_regrow_between_zeroings() -> None:
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mask = _magnitude_mask(model, 0.5)
    zero_pruned(model, mask)
    assert actual_mask(model, WEIGHTS) == mask
    _train(model, optimizer, 10)
    regrown = sum(int(model.get_parameter(n)[~mask[n]].ne(0).sum()) for n in WEIGHTS)
    assert regrown > 0
    new_mask = _magnitude_mask(model, 0.5)  # re-prune from all weights at the target
    zero_pruned(model, new_mask)
    assert weight_sparsity(model, WEIGHTS) == 0.5
    assert actual_mask(model, WEIGHTS) == new_mask


def test_mask_for_another_model_is_a_user_error() -> None:
    mask = Mask.ones_like(nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 4)))
    with pytest.raises(UserError, match="parameter '2.weight' has shape"):
        HardMask(_model(), mask)
    with pytest.raises(UserError, match="parameter '2.weight' has shape"):
        zero_pruned(_model(), mask)


def test_weight_sparsity_counts_exact_zeros() -> None:
    params = {"a": torch.tensor([0.0, 1.0, 0.0, 2.0]), "b": torch.zeros(4)}
    assert weight_sparsity(params, ["a"]) == 0.5
    assert weight_sparsity(params) == 0.75
    assert actual_mask(params)["a"].tolist() == [False, True, False, True]
