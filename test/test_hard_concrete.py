"""Hard-concrete gates (paper 004, Eq. 2 and Eq. 4): sampling statistics against the closed
forms, the straight-through gradient, deterministic 0/1 gates."""
from __future__ import annotations

import math

import pytest
import torch

from sprune.structured.hard_concrete import (BETA, GAMMA, ZETA, HardConcrete, log_alpha_for)

LOG_ALPHAS = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0, 4.0])


def gate_rows(samples: int, straight_through: bool = False) -> HardConcrete:
    """One row of `samples` gates per value of LOG_ALPHAS."""
    gate = HardConcrete((len(LOG_ALPHAS), samples), straight_through=straight_through)
    with torch.no_grad():
        gate.log_alpha.copy_(LOG_ALPHAS[:, None].expand(-1, samples))
    return gate


def test_sample_frequencies_match_the_closed_forms():
    torch.manual_seed(0)
    gate = gate_rows(20000)
    z = gate.sample().detach()
    assert z.min() >= 0.0 and z.max() <= 1.0
    nonzero = (z > 0).float().mean(dim=1)
    one = (z == 1).float().mean(dim=1)
    assert torch.allclose(nonzero, gate.prob_nonzero()[:, 0].detach(), atol=0.015)
    assert torch.allclose(one, gate.prob_one()[:, 0].detach(), atol=0.015)
    # Both ends are hit exactly, and some gates lie strictly between.
    assert (z == 0).any() and (z == 1).any() and ((z > 0) & (z < 1)).any()


def test_closed_form_is_paper_eq2():
    # P(z != 0) = P(s > -gamma / (zeta - gamma)) with s = sigmoid(logit(u) / beta + log_alpha).
    log_alpha = torch.tensor(0.7)
    threshold = -GAMMA / (ZETA - GAMMA)
    expected = 1.0 - torch.sigmoid(BETA * (math.log(threshold / (1 - threshold)) - log_alpha))
    gate = HardConcrete((1,))
    with torch.no_grad():
        gate.log_alpha.fill_(0.7)
    assert torch.allclose(gate.prob_nonzero(), expected.reshape(1), atol=1e-6)


def test_stretched_sample_follows_eq2_for_given_noise():
    gate = HardConcrete((3,))
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-1.0, 0.0, 2.0]))
    u = torch.tensor([0.2, 0.5, 0.9])
    s = torch.sigmoid(torch.log(u / (1 - u)) / BETA + gate.log_alpha.detach())
    assert torch.allclose(gate.stretched(u).detach(), s * (ZETA - GAMMA) + GAMMA)
    assert torch.allclose(gate.sample(u).detach(), (s * (ZETA - GAMMA) + GAMMA).clamp(0, 1))


def test_init_keep_prob_sets_the_initial_l0_probability():
    torch.manual_seed(0)
    for keep in (0.3, 0.9):
        gate = HardConcrete((500,), init_keep_prob=keep)
        assert abs(float(gate.prob_nonzero().detach().mean()) - keep) < 0.01
        assert abs(float(torch.sigmoid(BETA * (torch.tensor(log_alpha_for(keep))
                                                - math.log(-GAMMA / ZETA)))) - keep) < 1e-6


@pytest.mark.parametrize("scale", [50.0, -50.0, 0.3])
def test_straight_through_gradient_is_clipped_and_passes_saturation(scale):
    gate = HardConcrete((4,), straight_through=True)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-4.0, 0.0, 1.0, 6.0]))
    noise = torch.tensor([0.3, 0.5, 0.6, 0.7])
    z = gate.sample(noise)
    assert z[0] == 0.0 and z[3] == 1.0          # saturated at both ends
    (scale * z).sum().backward()
    s = torch.sigmoid(torch.log(noise / (1 - noise)) / BETA + gate.log_alpha.detach())
    clipped = max(-1.0, min(1.0, scale))
    expected = clipped * (ZETA - GAMMA) * s * (1 - s)   # dL/ds_bar = clip(dL/dz), then chain
    assert torch.allclose(gate.log_alpha.grad, expected, atol=1e-6)
    assert (gate.log_alpha.grad != 0).all()


def test_without_straight_through_saturated_gates_get_no_gradient():
    gate = HardConcrete((2,), straight_through=False)
    with torch.no_grad():
        gate.log_alpha.copy_(torch.tensor([-4.0, 6.0]))
    z = gate.sample(torch.tensor([0.3, 0.7]))
    (50.0 * z).sum().backward()
    assert torch.equal(gate.log_alpha.grad, torch.zeros(2))


def test_deterministic_gates_are_0_1_and_keep_the_expected_count():
    torch.manual_seed(0)
    gate = HardConcrete((3, 10))
    with torch.no_grad():
        gate.log_alpha.copy_(torch.randn(3, 10) * 3)
    gate.eval()
    first, second = gate(), gate()
    assert torch.equal(first, second)
    assert set(first.unique().tolist()) <= {0.0, 1.0}
    expected = torch.floor(gate.prob_nonzero().detach().sum(dim=1) + 0.5)
    assert torch.equal(first.sum(dim=1), expected)
    for row in range(3):  # the kept gates are those with the largest log_alpha
        kept = gate.log_alpha[row][first[row] == 1]
        dropped = gate.log_alpha[row][first[row] == 0]
        if len(kept) and len(dropped):
            assert kept.min() >= dropped.max()


def test_training_mode_samples_and_eval_mode_does_not():
    torch.manual_seed(0)
    gate = HardConcrete((50,), init_keep_prob=0.6)
    gate.train()
    assert not torch.equal(gate(), gate())
    gate.eval()
    assert torch.equal(gate(), gate())


def test_single_gate_keeps_when_more_likely_on_than_off_and_min_keep():
    gate = HardConcrete((1,))
    with torch.no_grad():
        gate.log_alpha.fill_(log_alpha_for(0.6))
    assert gate.deterministic().item() == 1.0
    with torch.no_grad():
        gate.log_alpha.fill_(log_alpha_for(0.4))
    assert gate.deterministic().item() == 0.0
    floor = HardConcrete((5,), min_keep=1)
    with torch.no_grad():
        floor.log_alpha.copy_(torch.tensor([-9.0, -8.0, -7.0, -9.5, -9.0]))
    assert floor.deterministic().tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]


def test_bad_arguments():
    with pytest.raises(ValueError):
        log_alpha_for(1.0)
    with pytest.raises(ValueError):
        HardConcrete((2,), beta=0.0)
