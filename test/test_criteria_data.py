"""Data-driven pruning criteria (taylor, wanda) and `score_parameters`: hand computations,
no side effects on the model or the RNGs, and every method x criterion x granularity on the
toy task of test_methods (runs, or fails with a one-line UserError)."""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
import torch
from torch import nn

from sprune.errors import UserError
from sprune.prune.criteria import CRITERIA, TaylorFirstOrder, Wanda, make_criterion
from sprune.prune.mask import Mask
from sprune.prune.methods import METHODS, make_method
from sprune.prune.methods.base import load_model_state
from sprune.prune.select import select_mask
from sprune.prune.statistics import score_parameters
from test_methods import GROUPS, build_model, context, prune_config, train_batches

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def mse(model, batch):
    return ((model(batch["x"]) - batch["y"]) ** 2).mean()


def hook_count(model):
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


# -- hand computations -------------------------------------------------------------------------

def test_taylor_is_the_mean_over_batches_of_abs_w_times_grad_by_hand():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, -1.0]]))
    batches = [{"x": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "y": torch.tensor([[0.0], [0.0]])},
               {"x": torch.tensor([[1.0, 1.0]]), "y": torch.tensor([[3.0]])}]
    # out = x w^T; L = mean_n (out_n - y_n)^2, so dL/dout_n = 2 (out_n - y_n) / N and
    # dL/dw = sum_n dL/dout_n * x_n.
    # batch 1: out = (2, -1), N = 2: dL/dout = (2, -1); dL/dw = 2 (1, 0) - 1 (0, 1) = (2, -1);
    #          |w * g| = (|2 * 2|, |-1 * -1|) = (4, 1)
    # batch 2: out = 2 - 1 = 1, N = 1: dL/dout = 2 (1 - 3) = -4; dL/dw = (-4, -4);
    #          |w * g| = (8, 4)
    # mean over the two batches: (6, 2.5)
    scores = score_parameters(make_criterion("taylor"), model, ["weight"], batches, mse)
    assert scores["weight"].dtype == torch.float32 and scores["weight"].shape == (1, 2)
    assert torch.allclose(scores["weight"], torch.tensor([[6.0, 2.5]]))
    assert model.weight.grad is None


def test_wanda_is_abs_w_times_the_input_feature_norm_over_every_row_by_hand():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
    batches = [{"x": torch.tensor([[2.0, 0.0], [4.0, 3.0]]), "y": torch.zeros(2, 2)},
               # [B, T, in]: every position of every sequence is a row of X
               {"x": torch.tensor([[[4.0, 0.0]], [[0.0, 4.0]]]), "y": torch.zeros(2, 1, 2)}]
    # X = rows (2, 0), (4, 3), (4, 0), (0, 4):
    # ||X_0|| = sqrt(4 + 16 + 16 + 0) = 6, ||X_1|| = sqrt(0 + 9 + 0 + 16) = 5
    # score = |W| * (6, 5) per row: (6, 10), (18, 2.5)
    scores = score_parameters(make_criterion("wanda"), model, ["weight"], batches, mse)
    assert torch.allclose(scores["weight"], torch.tensor([[6.0, 10.0], [18.0, 2.5]]))
    assert hook_count(model) == 0


# -- no side effects ---------------------------------------------------------------------------

class Mixed(nn.Module):
    """A dropout model with a frozen part kept in eval mode while the rest trains."""

    def __init__(self):
        super().__init__()
        self.frozen = nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self.body = nn.Linear(3, 4)
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(4, 1)
        self.modes_seen: list[bool] = []

    def forward(self, x):
        self.modes_seen.append(self.drop.training)
        return self.out(self.drop(self.body(self.frozen(x))))


def mixed_batches(n=3):
    gen = torch.Generator().manual_seed(5)
    return [{"x": torch.randn(4, 3, generator=gen), "y": torch.randn(4, 1, generator=gen)}
            for _ in range(n)]


@pytest.mark.parametrize("criterion", ["taylor", "wanda"])
@pytest.mark.parametrize("fail", [False, True])
def test_score_parameters_leaves_grads_modes_hooks_and_rngs_as_they_were(criterion, fail):
    torch.manual_seed(0)
    model = Mixed()
    model.train()
    model.frozen.eval()
    model.body.weight.grad = torch.full_like(model.body.weight, 7.0)
    kept_grad = model.body.weight.grad
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    calls = []

    def loss_of(m, batch):
        calls.append(1)
        torch.rand(5), random.random(), np.random.rand()   # a collate or forward that draws
        if fail and len(calls) == 2:
            raise ValueError("boom")
        return mse(m, batch)

    names = ["body.weight", "out.weight"]
    if fail:
        with pytest.raises(ValueError, match="boom"):
            score_parameters(make_criterion(criterion), model, names, mixed_batches(), loss_of)
    else:
        scores = score_parameters(make_criterion(criterion), model, names, mixed_batches(),
                                  loss_of)
        assert set(scores) == set(names) and len(calls) == 3
    assert model.modes_seen and not any(model.modes_seen)       # dropout off in the passes
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert model.body.weight.grad is kept_grad and torch.all(kept_grad == 7.0)
    assert all(p.grad is None for n, p in model.named_parameters() if n != "body.weight")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert hook_count(model) == 0
    assert torch.equal(torch.get_rng_state(), rng[0]) and random.getstate() == rng[1]
    assert np.array_equal(np.random.get_state()[1], rng[2])


def test_data_free_criteria_ignore_batches_and_data_driven_ones_need_them():
    model = Mixed()
    params = dict(model.named_parameters())
    scores = score_parameters(make_criterion("magnitude"), model, ["out.weight"], None, mse)
    assert torch.equal(scores["out.weight"], params["out.weight"].detach().abs())
    for name in ("taylor", "wanda"):
        for batches in (None, []):
            with pytest.raises(UserError, match=f"criterion '{name}' needs training batches: "
                                                "criterion_batches >= 1"):
                score_parameters(make_criterion(name), model, ["out.weight"], batches, mse)
        assert hook_count(model) == 0
    with pytest.raises(UserError, match="'nope' is not in the model"):
        score_parameters(make_criterion("taylor"), model, ["nope"], mixed_batches(), mse)


def test_taylor_refuses_a_frozen_weight_and_gives_zero_to_one_the_loss_does_not_reach():
    model = Mixed()
    with pytest.raises(UserError, match="gradient of 'frozen.weight', which is frozen") as info:
        score_parameters(make_criterion("taylor"), model, ["frozen.weight"], mixed_batches(), mse)
    assert "\n" not in str(info.value)
    model.spare = nn.Linear(3, 3)   # trainable but not used by forward: dL/dw = 0
    scores = score_parameters(make_criterion("taylor"), model, ["spare.weight", "out.weight"],
                              mixed_batches(), mse)
    assert not scores["spare.weight"].any() and scores["out.weight"].any()
    assert model.spare.weight.grad is None


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 2, 3)
        self.norm = nn.LayerNorm(2)
        self.proj = nn.Linear(2, 1)

    def forward(self, x):
        return self.proj(self.norm(self.conv(x).mean(-1)))


@pytest.mark.parametrize("name, what", [("conv.weight", "a parameter of Conv1d"),
                                        ("norm.weight", "a parameter of LayerNorm"),
                                        ("proj.bias", "the bias of an nn.Linear")])
def test_wanda_refuses_what_is_not_a_linear_weight_naming_it(name, what):
    model = ConvNet()
    batches = [{"x": torch.randn(2, 1, 8), "y": torch.randn(2, 1)}]
    with pytest.raises(UserError) as info:
        score_parameters(make_criterion("wanda"), model, ["proj.weight", name], batches, mse)
    message = str(info.value)
    assert message.startswith("criterion 'wanda' scores nn.Linear weights only; "
                              f"'{name}' is {what}") and "exclude it from the scope" in message
    assert "\n" not in message and hook_count(model) == 0
    assert set(score_parameters(Wanda(), model, ["proj.weight"], batches, mse)) == {"proj.weight"}


def test_wanda_refuses_a_linear_that_never_runs_as_a_module():
    model = ConvNet()
    model.unused = nn.Linear(2, 2)
    batches = [{"x": torch.randn(2, 1, 8), "y": torch.randn(2, 1)}]
    with pytest.raises(UserError, match="saw no input of 'unused'"):
        score_parameters(Wanda(), model, ["unused.weight"], batches, mse)


def test_a_reused_criterion_scores_the_new_batches_only():
    model = nn.Linear(2, 1, bias=False)
    batches = mixed_batches(2)
    for b in batches:
        b["x"] = b["x"][:, :2]
    criterion = TaylorFirstOrder()
    first = score_parameters(criterion, model, ["weight"], batches, mse)
    again = score_parameters(criterion, model, ["weight"], batches, mse)
    assert torch.equal(first["weight"], again["weight"]) and criterion.batches == 2


# -- the methods -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dense_dir(tmp_path_factory):
    """One dense run of the toy for every OMP case (dense ignores the criterion)."""
    root = tmp_path_factory.mktemp("dense")
    make_method(prune_config("dense")).run(context(root, max_steps=6), root / "dense")
    return root / "dense"


def tiny_config(method, criterion, granularity="element", **kw):
    return prune_config(method, criterion=criterion, granularity=granularity,
                        criterion_batches=2, reprune_every=2, initial_sparsity=0.2,
                        imp_fraction=0.3, imp_rewind_epochs=0.2, imp_level_epochs=0.4,
                        imp_ticket="target", **kw)


def expected_to_fail(method, criterion):
    """rp is random by definition: a data-driven criterion would have no effect."""
    kind = CRITERIA[criterion]
    return method == "rp" and (kind.needs_gradients or kind.needs_activations)


@pytest.mark.parametrize("granularity", ["element", "8x1", "row"])
@pytest.mark.parametrize("criterion", sorted(CRITERIA))
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_criterion_and_granularity_runs_or_says_why(tmp_path, dense_dir, method,
                                                                 criterion, granularity):
    config = tiny_config(method, criterion, granularity)
    if method == "pathways":   # the same toy model on two languages (its pathways are LAP)
        from test_pathways import context as two_languages

        ctx = two_languages(tmp_path, max_steps=6)
    else:
        ctx = context(tmp_path, dense_dir=dense_dir, max_steps=6)
    try:
        outcome = make_method(config).run(ctx, tmp_path / "run")
    except UserError as error:
        assert expected_to_fail(method, criterion), str(error)
        assert "\n" not in str(error) and "has no effect" in str(error)
        return
    assert not expected_to_fail(method, criterion)
    if method == "dense":
        assert outcome.achieved_sparsity == 0.0
    else:
        # 720 weights, 360 to prune; rows (up to 24 weights) may stop one unit short
        assert (360 - 24) / 720 <= outcome.achieved_sparsity <= 360 / 720
        assert Mask.load(tmp_path / "run" / "mask").sparsity() == pytest.approx(
            outcome.achieved_sparsity)


def test_make_method_checks_the_criterion_options_before_any_data():
    with pytest.raises(UserError, match="criterion_batches >= 1"):
        make_method(prune_config("omp", criterion="taylor", criterion_batches=0))
    make_method(prune_config("dense", criterion="taylor", criterion_batches=0))   # ignored
    make_method(prune_config("rp", criterion="random"))
    with pytest.raises(UserError, match="method 'rp' prunes at random; criterion 'wanda' has "
                                        "no effect: drop it"):
        make_method(prune_config("rp", criterion="wanda"))


def test_a_task_without_training_batches_refuses_data_driven_criteria(tmp_path):
    ctx = dataclasses.replace(context(tmp_path), train_batches=None)
    with pytest.raises(UserError, match="criterion 'taylor' needs training batches, which "
                                        "this task does not provide"):
        make_method(prune_config("mpi", criterion="taylor")).run(ctx, tmp_path / "mpi")


def reference_taylor(model, batches):
    """|w * dL/dw| by plain autograd, averaged over `batches`, dropout-free."""
    model.eval()
    params = dict(model.named_parameters())
    sums = {n: torch.zeros_like(params[n]) for n in GROUPS["hidden"]}
    for batch in batches:
        grads = torch.autograd.grad(model(batch)["loss"], [params[n] for n in sums])
        for (n, total), g in zip(sums.items(), grads):
            total += (params[n] * g).abs().detach()
    return {n: s / len(batches) for n, s in sums.items()}


def reference_wanda(model, batches):
    """|W| * ||X_j|| with X the inputs of net.0 (x) and net.2 (relu(net.0(x)))."""
    x = torch.cat([b["x"] for b in batches])
    with torch.no_grad():
        inputs = {"net.0.weight": x, "net.2.weight": torch.relu(model.net[0](x))}
    params = dict(model.named_parameters())
    return {n: params[n].detach().abs() * inputs[n].norm(dim=0)[None, :] for n in inputs}


@pytest.mark.parametrize("criterion, reference", [("taylor", reference_taylor),
                                                  ("wanda", reference_wanda)])
def test_omp_prunes_by_the_data_driven_criterion_not_by_magnitude(tmp_path, dense_dir,
                                                                 criterion, reference):
    finetuned = build_model()
    load_model_state(finetuned, dense_dir / "final")
    batches = list(train_batches(3))
    expected = select_mask(reference(finetuned, batches), 0.5)
    by_magnitude = select_mask(make_criterion("magnitude").scores(
        finetuned, GROUPS["hidden"]), 0.5)
    assert expected != by_magnitude     # the toy tells the rankings apart
    make_method(prune_config("omp", criterion=criterion, criterion_batches=3)).run(
        context(tmp_path, dense_dir=dense_dir), tmp_path / "omp", retrain=False)
    assert Mask.load(tmp_path / "omp" / "mask") == expected
