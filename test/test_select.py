"""Score, then select: criteria, scopes, and turning scores into masks."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from sprune.errors import UserError
from sprune.prune import select as select_module
from sprune.prune.criteria import CRITERIA, TaylorFirstOrder, make_criterion
from sprune.prune.mask import Mask
from sprune.prune.scope import resolve_scope
from sprune.prune.select import (Granularity, keep_below_threshold, kth_smallest,
                                 kth_smallest_exact, select_mask, unit_scores)


def _bools(rows: list) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def _stable_reference(scores: list[torch.Tensor], k: int) -> list[torch.Tensor]:
    """Prune the first k of a stable ascending sort of all scores."""
    joined = torch.cat([s.reshape(-1) for s in scores])
    keep = torch.ones(joined.numel(), dtype=torch.bool)
    keep[torch.sort(joined, stable=True).indices[:k]] = False
    return [k.reshape(s.shape) for k, s in zip(torch.split(keep, [s.numel() for s in scores]),
                                               scores)]


# -- selection on hand-made scores ------------------------------------------------------------

HAND = {
    "layers.0.a": torch.tensor([[0.1, 0.9], [0.5, 0.3]]),
    "layers.0.b": torch.tensor([0.2, 0.8]),
    "layers.1.a": torch.tensor([[0.7, 0.6], [0.05, 0.4]]),
}


def test_global_element_selection_prunes_lowest_everywhere() -> None:
    mask = select_mask(HAND, 0.5)  # 10 scores -> prune 5: 0.05, 0.1, 0.2, 0.3, 0.4
    assert mask["layers.0.a"].tolist() == [[False, True], [True, False]]
    assert mask["layers.0.b"].tolist() == [False, True]
    assert mask["layers.1.a"].tolist() == [[True, True], [False, False]]
    assert mask.num_kept() == 5


def test_per_layer_and_per_parameter_distributions() -> None:
    by_layer = select_mask(HAND, 0.5, distribution="layer")
    # layers.0 (6 scores) prunes 3: 0.1, 0.2, 0.3; layers.1 (4 scores) prunes 2: 0.05, 0.4
    assert by_layer["layers.0.a"].tolist() == [[False, True], [True, False]]
    assert by_layer["layers.0.b"].tolist() == [False, True]
    assert by_layer["layers.1.a"].tolist() == [[True, True], [False, False]]
    per_param = select_mask(HAND, 0.5, distribution="parameter")
    assert per_param["layers.0.a"].tolist() == [[False, True], [True, False]]
    assert per_param["layers.0.b"].tolist() == [False, True]
    assert per_param["layers.1.a"].tolist() == [[True, True], [False, False]]
    skewed = {"layers.0.w": torch.arange(4.0), "layers.1.w": torch.arange(4.0) + 10}
    assert select_mask(skewed, 0.5)["layers.1.w"].all()
    assert select_mask(skewed, 0.5, distribution="layer")["layers.1.w"].tolist() == \
        [False, False, True, True]


def test_ties_prune_earlier_positions_first() -> None:
    scores = {"a": torch.tensor([1.0, 0.0, 1.0]), "b": torch.tensor([1.0, 1.0, 2.0])}
    mask = select_mask(scores, 0.5)  # 6 -> prune 3: the 0, then the first two 1.0s
    assert mask["a"].tolist() == [False, False, False]
    assert mask["b"].tolist() == [True, True, True]
    mask = select_mask(scores, 4 / 6)  # and the third 1.0
    assert mask["b"].tolist() == [False, True, True]


def test_count_is_round_of_sparsity_times_n() -> None:
    scores = {"w": torch.rand(100, generator=torch.Generator().manual_seed(0))}
    assert select_mask(scores, 0.29).sparsity() == pytest.approx(0.29)  # not 28 from floor
    assert select_mask({"w": torch.rand(7)}, 0.5).num_kept() == 3  # round(3.5) -> 4 pruned
    assert select_mask(scores, 0.0).sparsity() == 0.0


def test_8x1_blocks_on_known_scores() -> None:
    # 16 x 2 weight: 8x1 blocks are (rows 0-7 | 8-15) x (column 0 | 1)
    score = torch.zeros(16, 2)
    score[:8, 0], score[8:, 0], score[:8, 1], score[8:, 1] = 1.0, 4.0, 3.0, 2.0
    score[0, 0] = 9.0  # block (0, 0) now has mean (9 + 7) / 8 = 2.0: ties with block (1, 1)
    means, sizes = unit_scores(score, Granularity.parse("8x1"))
    assert means.tolist() == [[2.0, 3.0], [4.0, 2.0]] and sizes.unique().tolist() == [8.0]
    mask = select_mask({"w": score}, 0.5, granularity="8x1")["w"]
    # two blocks pruned; both tie at 2.0 -> blocks (0,0) and (1,1)
    assert not mask[:8, 0].any() and not mask[8:, 1].any()
    assert mask[8:, 0].all() and mask[:8, 1].all()


def test_partial_edge_blocks_use_their_own_size() -> None:
    score = torch.arange(30.0).reshape(10, 3)  # 8x1 -> units of 8 rows and 2 rows
    means, sizes = unit_scores(score, Granularity(8, 1))
    assert sizes.tolist() == [[8.0, 8.0, 8.0], [2.0, 2.0, 2.0]]
    assert means[1].tolist() == [(24 + 27) / 2, (25 + 28) / 2, (26 + 29) / 2]
    assert means[0, 0] == sum(range(0, 24, 3)) / 8
    mask = select_mask({"w": score}, 0.55, granularity="8x1")["w"]
    # budget round(16.5) = 16 weights: the two lowest 8-row units (columns 0 and 1)
    assert mask.sum() == 14 and not mask[:8, :2].any() and mask[:8, 2].all()


def test_rows_are_output_units_and_budget_never_exceeded() -> None:
    scores = {"w": torch.tensor([[1.0, 1.0], [5.0, 5.0], [0.0, 2.0]]),
              "v": torch.tensor([[3.0, 3.0, 3.0, 3.0]])}
    mask = select_mask(scores, 0.4, granularity="row")  # 10 weights, budget 4
    # row means: w0 1.0, w1 5.0, w2 1.0, v0 3.0; prune w0 and w2 (4 weights)
    assert mask["w"].tolist() == [[False, False], [True, True], [False, False]]
    assert mask["v"].all()
    mask = select_mask(scores, 0.7, granularity="row")  # budget 7: v0 (4 more) would exceed
    assert mask.num_kept() == 6 and mask["v"].all()


def test_conv_and_bias_shapes_with_blocks() -> None:
    conv = torch.rand(4, 2, 3, generator=torch.Generator().manual_seed(1))
    mask = select_mask({"conv": conv, "bias": torch.tensor([0.0, 1.0, 2.0])}, 0.5,
                       granularity="row")
    assert mask["conv"].shape == (4, 2, 3) and mask["bias"].shape == (3,)
    for out_channel in mask["conv"]:
        assert out_channel.all() or not out_channel.any()


def test_global_magnitude_equals_torch_global_unstructured() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 20), nn.Conv1d(4, 6, 3))
    weights = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    for sparsity in (0.3, 0.7, 0.913):
        ours = select_mask(make_criterion("magnitude").scores(weights), sparsity)
        reference = nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 20),
                                  nn.Conv1d(4, 6, 3))
        reference.load_state_dict(model.state_dict())
        torch_prune.global_unstructured(
            [(reference[0], "weight"), (reference[2], "weight"), (reference[3], "weight")],
            pruning_method=torch_prune.L1Unstructured, amount=sparsity)
        for name, module in (("0.weight", reference[0]), ("2.weight", reference[2]),
                             ("3.weight", reference[3])):
            assert torch.equal(ours[name], module.weight_mask.bool()), (sparsity, name)


def test_previous_mask_keeps_pruned_weights_pruned() -> None:
    weights = {"w": torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 6.0, 7.0, 8.0])}
    previous = Mask({"w": _bools([0, 0, 1, 1, 1, 1, 1, 1])})  # large weights pruned before
    mask = select_mask(weights, 0.5, previous=previous)
    # 4 to prune: the two pruned before, then the two smallest of the rest (1.0, 2.0)
    assert mask["w"].tolist() == [False, False, True, False, False, True, True, True]
    # already sparser than asked: the old mask stays as it is (masks only grow sparser)
    assert select_mask(weights, 0.1, previous=previous) == previous
    block_prev = Mask({"m": _bools([[0, 1], [0, 1], [1, 1], [1, 1]])})
    blocks = select_mask({"m": torch.full((4, 2), 5.0)}, 0.5, granularity="2x1",
                         previous=block_prev)
    assert blocks["m"].tolist() == [[False, False], [False, False], [True, True], [True, True]]


def test_fast_threshold_equals_kthvalue_with_ties_and_infinities(monkeypatch) -> None:
    monkeypatch.setattr(select_module, "_EXACT_BELOW", 1000)  # sampled path on small data
    monkeypatch.setattr(select_module, "_SAMPLE_SIZE", 4096)
    gen = torch.Generator().manual_seed(3)
    shapes = [(300, 70), (100, 400), (5,), (70, 300), (50, 600)]
    continuous = [torch.randn(s, generator=gen).abs() for s in shapes]
    ties = [torch.randint(0, 50, s, generator=gen).float() for s in shapes]
    pruned_before = [t.masked_fill(torch.rand(t.shape, generator=gen) < 0.4, -math.inf)
                     for t in continuous]
    n = sum(t.numel() for t in continuous)
    for tensors in (continuous, ties, pruned_before):
        for k in (1, n // 3, int(0.7 * n), n - 1, n):
            fast, exact = kth_smallest(tensors, k), kth_smallest_exact(tensors, k)
            assert fast.value == exact.value and fast.below == exact.below
            assert fast.equal == exact.equal
    exact_calls = []
    monkeypatch.setattr(select_module, "kth_smallest_exact",
                        lambda *a: exact_calls.append(a) or kth_smallest_exact(*a))
    kth_smallest(continuous, int(0.7 * n))
    assert not exact_calls  # the sampled bracket found it, no fallback
    for k in (int(0.7 * n), 12345):
        keeps = keep_below_threshold(ties, kth_smallest(ties, k), k)
        for ours, ref in zip(keeps, _stable_reference(ties, k)):
            assert torch.equal(ours, ref)


def test_torch_path_for_accelerators_matches_the_numpy_path(monkeypatch) -> None:
    monkeypatch.setattr(select_module, "_EXACT_BELOW", 1000)
    gen = torch.Generator().manual_seed(4)
    tensors = [torch.randint(0, 300, s, generator=gen).float() for s in ((200, 30), (7000,))]
    k = 9000
    on_numpy = keep_below_threshold(tensors, kth_smallest(tensors, k), k)
    monkeypatch.setattr(select_module, "_on_cpu", lambda tensors: False)
    on_torch = keep_below_threshold(tensors, kth_smallest(tensors, k), k)
    reference = _stable_reference(tensors, k)
    for a, b, c in zip(on_numpy, on_torch, reference):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_fast_threshold_recovers_when_the_bracket_misses(monkeypatch) -> None:
    monkeypatch.setattr(select_module, "_EXACT_BELOW", 100)
    monkeypatch.setattr(select_module, "_SAMPLE_SIZE", 4)
    monkeypatch.setattr(select_module, "_BRACKET_SIGMAS", 0.0)
    gen = torch.Generator().manual_seed(5)
    tensors = [torch.rand(2000, generator=gen), torch.randint(0, 3, (3000,), generator=gen)
               .float()]
    for k in (1, 700, 2500, 4999, 5000):
        assert kth_smallest(tensors, k).value == kth_smallest_exact(tensors, k).value
        keeps = keep_below_threshold(tensors, kth_smallest(tensors, k), k)
        assert all(torch.equal(a, b) for a, b in zip(keeps, _stable_reference(tensors, k)))


def test_bad_sparsity_granularity_and_distribution_are_user_errors() -> None:
    for bad in (1.0, -0.1, 1.5, float("nan"), "lots"):
        with pytest.raises(UserError, match="sparsity"):
            select_mask(HAND, bad)
    with pytest.raises(UserError, match="granularity '9y1'.*8x1"):
        select_mask(HAND, 0.5, granularity="9y1")
    with pytest.raises(UserError, match="distribution 'everywhere'.*global, layer"):
        select_mask(HAND, 0.5, distribution="everywhere")


def test_nan_scores_are_a_user_error_naming_the_parameter(monkeypatch) -> None:
    scores = {"ok": torch.rand(50), "bad": torch.rand(50)}
    scores["bad"][7] = float("nan")
    with pytest.raises(UserError, match="parameter 'bad' contain NaN"):
        select_mask(scores, 0.5)
    with pytest.raises(UserError, match="parameter 'bad' contain NaN"):
        select_mask(scores, 0.5, granularity="row")
    monkeypatch.setattr(select_module, "_EXACT_BELOW", 10)  # the sampled path too
    with pytest.raises(UserError, match="parameter 'bad' contain NaN"):
        select_mask(scores, 0.5)


# -- criteria ----------------------------------------------------------------------------------

def test_unknown_criterion_lists_known_ones() -> None:
    with pytest.raises(UserError, match="unknown pruning criterion 'snip'; known: "
                                        "magnitude, random, taylor"):
        make_criterion("snip")
    with pytest.raises(UserError, match="does not take options"):
        make_criterion("magnitude", seed=3)
    assert set(CRITERIA) == {"magnitude", "random", "taylor", "wanda"}


def test_magnitude_and_random_scores() -> None:
    params = {"w": torch.tensor([[-3.0, 1.0]]), "b": torch.tensor([0.5])}
    assert make_criterion("magnitude").scores(params, ["w"])["w"].tolist() == [[3.0, 1.0]]
    first = make_criterion("random", seed=7).scores(params)
    again = make_criterion("random", seed=7).scores(params)
    other = make_criterion("random", seed=8).scores(params)
    assert torch.equal(first["w"], again["w"]) and not torch.equal(first["w"], other["w"])
    assert ((first["w"] >= 0) & (first["w"] < 1)).all()
    with pytest.raises(UserError, match="'nope' is not in the model"):
        make_criterion("magnitude").scores(params, ["nope"])


def test_taylor_equals_hand_computation() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    batches = [(torch.randn(4, 3), torch.randn(4, 2)) for _ in range(2)]
    criterion = TaylorFirstOrder(["weight", "bias"])
    expected = {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}
    for x, y in batches:
        model.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        criterion.accumulate(model)
        # by hand: loss = mean((xW^T + b - y)^2) over 8 values -> dL/dout = 2 (out - y) / 8
        with torch.no_grad():
            d_out = 2 * (x @ model.weight.T + model.bias - y) / 8
            expected["weight"] += (model.weight * (d_out.T @ x)).abs()
            expected["bias"] += (model.bias * d_out.sum(0)).abs()
    scores = criterion.scores()
    assert criterion.batches == 2
    assert torch.allclose(scores["weight"], expected["weight"] / 2, atol=1e-6)
    assert torch.allclose(scores["bias"], expected["bias"] / 2, atol=1e-6)
    with pytest.raises(UserError, match="saw no batches"):
        TaylorFirstOrder().scores()


# -- scopes ------------------------------------------------------------------------------------

class _TinyUpstream(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 4, 3)
        self.proj = nn.Linear(4, 6)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"q": nn.Linear(6, 6), "norm": nn.LayerNorm(6),
                           "ffn_in": nn.Linear(6, 8)})
            for _ in range(2))

    def groups(self) -> dict[str, list[str]]:
        groups = {"conv_extractor": ["conv.weight", "conv.bias"],
                  "feature_projection": ["proj.weight", "proj.bias"]}
        for i in range(2):
            groups[f"layers.{i}.attention.q"] = [f"layers.{i}.q.weight", f"layers.{i}.q.bias"]
            groups[f"layers.{i}.ffn.in"] = [f"layers.{i}.ffn_in.weight",
                                            f"layers.{i}.ffn_in.bias"]
        groups["transformer"] = [n for n, _ in self.named_parameters() if n.startswith("layers")]
        groups["all"] = [n for n, _ in self.named_parameters()]
        return groups


def test_scope_presets() -> None:
    model = _TinyUpstream()
    groups = model.groups()
    transformer = ["layers.0.q.weight", "layers.0.ffn_in.weight", "layers.1.q.weight",
                   "layers.1.ffn_in.weight"]
    assert resolve_scope(model, groups=groups) == transformer
    assert resolve_scope(model, preset="transformer+extractor", groups=groups) == \
        ["conv.weight"] + transformer
    assert resolve_scope(model, preset="all") == ["conv.weight", "proj.weight"] + transformer
    groups["all"] = ["proj.weight", "layers.1.q.weight"]  # a model's own `all` group wins
    assert resolve_scope(model, preset="all", groups=groups) == ["proj.weight",
                                                                 "layers.1.q.weight"]


def test_scope_include_exclude_groups_and_globs() -> None:
    model = _TinyUpstream()
    groups = model.groups()
    assert resolve_scope(model, groups=groups, include=["feature_projection"],
                         exclude=["layers.1.*", "*.bias"]) == \
        ["proj.weight", "layers.0.q.weight", "layers.0.ffn_in.weight"]
    assert resolve_scope(model, preset=None, include=["*.norm.*"]) == \
        ["layers.0.norm.weight", "layers.0.norm.bias", "layers.1.norm.weight",
         "layers.1.norm.bias"]
    assert resolve_scope(model, preset=None, include=["layers.*.attention.*"],
                         groups=groups) == ["layers.0.q.weight", "layers.0.q.bias",
                                            "layers.1.q.weight", "layers.1.q.bias"]


def test_scope_errors() -> None:
    model = _TinyUpstream()
    groups = model.groups()
    with pytest.raises(UserError, match="include group or parameter 'pos_conv' matches no "
                                        "parameter.*known groups: conv_extractor"):
        resolve_scope(model, groups=groups, include=["pos_conv"])
    with pytest.raises(UserError, match="exclude pattern 'encoder.*'"):
        resolve_scope(model, groups=groups, exclude=["encoder.*"])
    with pytest.raises(UserError, match="unknown pruning scope preset 'most'; known: "
                                        "transformer, transformer\\+extractor, all"):
        resolve_scope(model, preset="most", groups=groups)
    with pytest.raises(UserError, match="needs parameter group 'layers.\\*.attention.\\*'"):
        resolve_scope(model)
    with pytest.raises(UserError, match="selects no parameter"):
        resolve_scope(model, groups=groups, exclude=["transformer"])
