"""Hard-concrete gates (Louizos et al. 2018) as written in paper 004, Eq. 2 and Eq. 4.

One `HardConcrete` holds the log-alpha parameters of a tensor of gates z in [0, 1]:

    u ~ U(0, 1),  s = sigmoid(log(u / (1 - u)) / beta + log_alpha)
    s_bar = s (zeta - gamma) + gamma,  z = hardtanh(s_bar) = clamp(s_bar, 0, 1)

with beta = 2/3, gamma = -0.1, zeta = 1.1. Note that Eq. 2 of paper 004 adds log_alpha
AFTER dividing the logistic noise by beta, where Louizos et al. write
sigmoid((log(u / (1 - u)) + log_alpha) / beta); both are the same family (log_alpha scaled
by beta), we follow the paper. The stretch makes z exactly 0 or 1 with non-zero
probability, so the L0 norm of the gates has the closed form

    P(z != 0) = P(s_bar > 0) = sigmoid(beta * (log_alpha - log(-gamma / zeta))).

Straight-through (paper 004, Eq. 4): hardtanh has zero gradient where it saturates, so a
gate saturated at 0 or 1 would never move. With `straight_through=True` the forward value
is the same clamped sample, but the backward pass treats the clamp as the identity with the
incoming gradient clipped to [-1, 1]: dL/ds_bar = clip(dL/dz, -1, 1).

Deterministic gates at evaluation (the choice made here, CoFi-style expected-count
ranking): each row of gates (the last dimension: the dims of one head, the heads of one
layer, the units of one FFN; a single gate is a row of one) keeps exactly
round(sum P(z != 0)) gates, those with the largest log_alpha, as 1.0 and sets the others to
0.0 (never fewer than `min_keep`). The 0/1 masks therefore keep as many structures as the
L0 norm the sparsity controller trained, and a masked model equals a physically shrunk one.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

BETA = 2.0 / 3.0
GAMMA = -0.1
ZETA = 1.1
NOISE_EPS = 1e-6      # keeps log(u / (1 - u)) finite
INIT_NOISE_STD = 0.01  # breaks ties between gates that start equal


def prob_nonzero(log_alpha: Tensor, beta: float = BETA) -> Tensor:
    """P(z != 0) of hard-concrete gates with these log_alphas (any shape -> same shape)."""
    return torch.sigmoid(beta * (log_alpha - math.log(-GAMMA / ZETA)))


class _ClampStraightThrough(torch.autograd.Function):
    """clamp(x, 0, 1) forward; backward passes the gradient clipped to [-1, 1] (Eq. 4)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.clamp(0.0, 1.0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.clamp(-1.0, 1.0)


def log_alpha_for(keep_prob: float, beta: float = BETA) -> float:
    """The log_alpha whose gate is non-zero with probability `keep_prob` (inverse of the
    closed-form L0 term)."""
    if not 0.0 < keep_prob < 1.0:
        raise ValueError(f"keep_prob must be in (0, 1), got {keep_prob}")
    return math.log(keep_prob / (1.0 - keep_prob)) / beta + math.log(-GAMMA / ZETA)


class HardConcrete(nn.Module):
    """A tensor of hard-concrete gates of shape `shape` (see the module docstring).

    `forward()` returns sampled gates in training mode and the deterministic 0/1 gates in
    eval mode, both of shape `shape`. `init_keep_prob` sets the initial P(z != 0).
    """

    def __init__(self, shape: Sequence[int], *, beta: float = BETA, straight_through: bool = False,
                 init_keep_prob: float = 0.9, min_keep: int = 0) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        self.shape = tuple(int(n) for n in shape)
        self.beta = float(beta)
        self.straight_through = straight_through
        self.min_keep = int(min_keep)
        init = log_alpha_for(init_keep_prob, beta)
        self.log_alpha = nn.Parameter(torch.randn(self.shape) * INIT_NOISE_STD + init)

    def extra_repr(self) -> str:
        return (f"shape={self.shape}, beta={self.beta:.4g}, "
                f"straight_through={self.straight_through}, min_keep={self.min_keep}")

    # -- training ------------------------------------------------------------------------------
    def stretched(self, noise: Tensor | None = None) -> Tensor:
        """s_bar for uniform `noise` (drawn when None): same shape as log_alpha."""
        if noise is None:
            noise = torch.rand_like(self.log_alpha)
        u = noise.clamp(NOISE_EPS, 1.0 - NOISE_EPS)
        s = torch.sigmoid(torch.log(u / (1.0 - u)) / self.beta + self.log_alpha)
        return s * (ZETA - GAMMA) + GAMMA

    def sample(self, noise: Tensor | None = None) -> Tensor:
        """Gates z in [0, 1] for one forward pass, differentiable w.r.t. log_alpha."""
        s_bar = self.stretched(noise)
        if self.straight_through:
            return _ClampStraightThrough.apply(s_bar)
        return s_bar.clamp(0.0, 1.0)

    # -- closed forms --------------------------------------------------------------------------
    def prob_nonzero(self) -> Tensor:
        """P(z != 0) per gate (the expected L0 norm), differentiable: same shape."""
        return prob_nonzero(self.log_alpha, self.beta)

    def prob_one(self) -> Tensor:
        """P(z == 1) per gate: same shape."""
        return torch.sigmoid(self.beta * (self.log_alpha - math.log((1.0 - GAMMA) / (ZETA - 1.0))))

    # -- evaluation ----------------------------------------------------------------------------
    @torch.no_grad()
    def deterministic(self) -> Tensor:
        """0/1 gates: each row keeps its round(sum P(z != 0)) largest log_alphas."""
        rows = self.log_alpha.detach().reshape(-1, self.shape[-1] if self.shape else 1)
        size = rows.shape[1]
        expected = self.prob_nonzero().detach().reshape(rows.shape).sum(dim=1)
        keep = torch.floor(expected + 0.5).long().clamp(min=min(self.min_keep, size), max=size)
        order = torch.argsort(rows, dim=1, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(size, device=rows.device).expand_as(order))
        gates = (rank < keep[:, None]).to(self.log_alpha.dtype)
        return gates.reshape(self.log_alpha.shape)

    def forward(self) -> Tensor:
        return self.sample() if self.training else self.deterministic()
