"""Pathway statistics on hand-made masks whose IOUs and sharing histogram are counted by hand."""
from __future__ import annotations

import pytest
import torch

from sprune.errors import UserError
from sprune.prune.mask import Mask
from sprune.prune.pathway_stats import (iou_table, mask_drift, pairwise_iou, plot_mask_drift,
                                        plot_pathway_iou, plot_sharing_histogram, residual,
                                        sharing_histogram, union, usage_counts)


def mask(w: list[list[int]], b: list[int]) -> Mask:
    return Mask({"layer.w": torch.tensor(w, dtype=torch.bool),
                 "layer.b": torch.tensor(b, dtype=torch.bool)})


# 12 weights: w [2, 4] and b [4].
#   en keeps w(0,0) w(0,1) w(1,0) b0 b1      (5)
#   fr keeps w(0,0) w(0,2) w(1,0) b0         (4)
#   it keeps w(1,3) b1                       (2)
# languages per weight: w [[2, 1, 1, 0], [2, 0, 0, 1]], b [2, 2, 0, 0]
#   -> 0 languages: 5 weights, 1: 3, 2: 4, 3: 0
# en & fr: 3 shared of 6 kept by either -> 1/2; en & it: b1 of 6 -> 1/6; fr & it: 0 of 6 -> 0
MASKS = {"en": mask([[1, 1, 0, 0], [1, 0, 0, 0]], [1, 1, 0, 0]),
         "fr": mask([[1, 0, 1, 0], [1, 0, 0, 0]], [1, 0, 0, 0]),
         "it": mask([[0, 0, 0, 0], [0, 0, 0, 1]], [0, 1, 0, 0])}


def test_pairwise_iou_counted_by_hand():
    assert pairwise_iou(MASKS) == pytest.approx({("en", "fr"): 0.5, ("en", "it"): 1 / 6,
                                                 ("fr", "it"): 0.0})
    assert list(pairwise_iou(MASKS)) == [("en", "fr"), ("en", "it"), ("fr", "it")]
    assert pairwise_iou({"en": MASKS["en"]}) == {}
    expected = [[1.0, 0.5, 1 / 6], [0.5, 1.0, 0.0], [1 / 6, 0.0, 1.0]]
    assert [row == pytest.approx(want) for row, want in zip(iou_table(MASKS), expected)] == [
        True] * 3


def test_sharing_histogram_counted_by_hand():
    counts = usage_counts(MASKS)
    assert counts["layer.w"].tolist() == [[2, 1, 1, 0], [2, 0, 0, 1]]
    assert counts["layer.b"].tolist() == [2, 2, 0, 0]
    assert sharing_histogram(MASKS) == pytest.approx([5 / 12, 3 / 12, 4 / 12, 0.0])
    # one language: its sparsity and density
    assert sharing_histogram({"it": MASKS["it"]}) == pytest.approx([10 / 12, 2 / 12])
    # identical masks are all shared
    assert sharing_histogram({"a": MASKS["en"], "b": MASKS["en"]}) == pytest.approx(
        [7 / 12, 0.0, 5 / 12])


def test_union_and_residual_partition_the_scope():
    kept = union(MASKS)
    assert kept["layer.w"].tolist() == [[True, True, True, False], [True, False, False, True]]
    assert kept["layer.b"].tolist() == [True, True, False, False]
    rest = residual(MASKS)
    assert rest.num_kept() == 5 == round(sharing_histogram(MASKS)[0] * 12)
    assert all(torch.equal(rest[n], ~kept[n]) for n in kept)
    assert list(rest) == list(MASKS["en"])


def test_mask_drift_is_iou_of_consecutive_rounds():
    rounds = [MASKS["en"], MASKS["fr"], MASKS["fr"], MASKS["it"]]
    assert mask_drift(rounds) == pytest.approx([0.5, 1.0, 0.0])
    assert mask_drift(rounds[:1]) == []


def test_masks_of_other_models_or_none_are_user_errors():
    other = Mask({"layer.w": torch.ones(2, 4, dtype=torch.bool)})
    for call in (pairwise_iou, sharing_histogram, union, residual):
        with pytest.raises(UserError, match="parameter 'layer.b' is in one mask only"):
            call({"en": MASKS["en"], "xx": other})
        with pytest.raises(UserError, match="no language masks"):
            call({})
    wrong_shape = Mask({"layer.w": torch.ones(4, 2, dtype=torch.bool),
                        "layer.b": torch.ones(4, dtype=torch.bool)})
    with pytest.raises(UserError, match="has shape"):
        sharing_histogram({"en": MASKS["en"], "xx": wrong_shape})


def test_plots_write_pngs(tmp_path):
    png = b"\x89PNG\r\n\x1a\n"
    assert plot_pathway_iou(MASKS, tmp_path / "iou.png").read_bytes().startswith(png)
    assert plot_sharing_histogram(MASKS, tmp_path / "share.png").read_bytes().startswith(png)
    rounds = [MASKS["en"], MASKS["fr"], MASKS["it"]]
    path = plot_mask_drift(rounds, tmp_path / "drift.png", labels=["50 %", "60 %", "70 %"])
    assert path.read_bytes().startswith(png)
    path = plot_mask_drift({"en": rounds, "fr": rounds[:2]}, tmp_path / "drift2.png")
    assert path.read_bytes().startswith(png)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drift.png", "drift2.png", "iou.png",
                                                          "share.png"]
    with pytest.raises(UserError, match="at least 2 rounds"):
        plot_mask_drift(rounds[:1], tmp_path / "x.png")
    with pytest.raises(UserError, match="2 round labels for 3 rounds"):
        plot_mask_drift(rounds, tmp_path / "x.png", labels=["a", "b"])
