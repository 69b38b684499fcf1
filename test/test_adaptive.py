"""Adaptive masking (paper 003, monolingual): the rounds' adaptation and pruning steps on a
hand-made weight, the schedule, masks per round, resume, and bad configs."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from sprune.errors import UserError
from sprune.prune.mask import Mask
from sprune.prune.methods import PruneConfig, PruneContext, make_method
from sprune.prune.methods.adaptive import sparsity_schedule
from sprune.prune.methods.base import load_model_state
from sprune.training import TrainConfig, Trainer

from test_methods import KillAt, build_model, context, prune_config, scoped_zero_fraction


class Hand(nn.Module):
    """One 2 x 4 weight with known values; the loss does not move it (lr 0)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[0.1, -0.9, 0.3, 0.05], [0.7, -0.2, 0.6, -0.4]]))

    def forward(self, batch):
        return {"loss": (self.w.sum() * batch["x"]).sum() * 0.0 + self.w.sum() * 0.0}


def hand_context(tmp_path):
    data = TensorDataset(torch.ones(4, 1))
    config = TrainConfig(max_steps=4, batch_size=2, lr=0.0, eval_every=100, save_every=100,
                         device="cpu", weight_decay=0.0)

    def make_trainer(model, out, callbacks, cfg):
        return Trainer(model, data, lambda items: {"x": torch.stack([i[0] for i in items])},
                       cfg, out, evaluate=lambda m: {"accuracy": 0.0}, callbacks=callbacks,
                       show_progress=False)

    return PruneContext(build_model=Hand, groups={"w": ["w"]}, train_config=config,
                        make_trainer=make_trainer, evaluate=lambda m: {"accuracy": 0.0},
                        log=lambda msg: None)


def test_adaptation_brings_back_pruned_weights_with_their_values(tmp_path):
    """A deliberately bad initial mask (it prunes the 4 largest weights) at 50 %: the
    adaptation re-prunes from all weights by magnitude, so the 4 largest come back with
    their original values; the pruning step to 75 % then keeps the 2 largest of those."""
    bad = torch.tensor([[True, False, True, True], [False, True, False, False]])
    Mask({"w": bad}).save(tmp_path / "bad")
    cfg = PruneConfig(method="adaptive", scope=None, include=["w"], sparsity=0.75,
                      sparsity_schedule=[0.5, 0.75], round_steps=2, adapt_at=1,
                      mask_from=str(tmp_path / "bad"))
    outcome = make_method(cfg).run(hand_context(tmp_path), tmp_path / "run")
    events = outcome.extra["events"]
    assert [(e["step"], e["kind"]) for e in events] == [(1, "adapt"), (2, "prune"),
                                                        (3, "adapt")]
    adapted = Mask.load(tmp_path / "run" / "rounds" / "000001_adapt")
    assert adapted["w"].tolist() == [[False, True, False, False], [True, False, True, True]]
    assert events[0]["iou_with_previous"] == 0.0
    final = Mask.load(tmp_path / "run" / "mask")
    assert final["w"].tolist() == [[False, True, False, False], [True, False, False, False]]
    model = Hand()
    load_model_state(model, tmp_path / "run" / "final")
    assert torch.equal(model.w, torch.tensor([[0.0, -0.9, 0.0, 0.0], [0.7, 0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("granularity", ["element", "8x1"])
def test_rounds_schedule_and_pruned_weights_stay_zero(tmp_path, granularity):
    cfg = prune_config("adaptive", sparsity=0.5, sparsity_schedule=[0.3, 0.4, 0.5],
                       round_steps=8, adapt_at=4, granularity=granularity)
    outcome = make_method(cfg).run(context(tmp_path), tmp_path)
    events = outcome.extra["events"]
    assert [(e["step"], e["kind"]) for e in events] == [
        (4, "adapt"), (8, "prune"), (12, "adapt"), (16, "prune"), (20, "adapt")]
    assert [round(e["sparsity"], 3) for e in events] == [0.3, 0.4, 0.4, 0.5, 0.5]
    # a pruning step prunes among the kept weights only; an adaptation may bring back some
    masks = [Mask.load(p) for p in sorted((tmp_path / "rounds").iterdir())]
    for kind, before, after in zip([e["kind"] for e in events[1:]], masks, masks[1:]):
        if kind == "prune":
            assert all(not (after[n] & ~before[n]).any() for n in after)
    assert any((after[n] & ~before[n]).any() for before, after in zip(masks, masks[1:])
               for n in after)
    assert outcome.achieved_sparsity == pytest.approx(0.5, abs=0.01)
    if granularity == "8x1":   # every block of 8 output rows x 1 input column is whole
        for mask in masks:
            for keep in mask.values():
                blocks = keep.view(-1, 8, keep.shape[1])
                assert torch.equal(blocks.all(dim=1), blocks.any(dim=1))
    assert scoped_zero_fraction(_final(tmp_path)) == pytest.approx(outcome.achieved_sparsity)
    summary = json.loads((tmp_path / "finetune" / "summary.json").read_text())
    assert summary["steps"] == 24   # 3 rounds of 8 updates replace train.max_steps


def _final(folder):
    model = build_model()
    load_model_state(model, folder / "final")
    return model


def test_killed_run_resumes_to_the_same_mask_and_weights(tmp_path):
    cfg = prune_config("adaptive", sparsity=0.5, rounds=3, initial_sparsity=0.3,
                       round_steps=8, adapt_at=4)
    full = make_method(cfg).run(context(tmp_path / "a"), tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):   # after the adaptation at 12 (checkpoint at 10)
        make_method(cfg).run(context(tmp_path / "b", extra_callbacks=[KillAt(13, "finetune")]),
                             tmp_path / "b")
    resumed = make_method(cfg).run(context(tmp_path / "b"), tmp_path / "b")
    assert Mask.load(tmp_path / "a" / "mask") == Mask.load(tmp_path / "b" / "mask")
    assert resumed.dev == full.dev and resumed.extra["events"] == full.extra["events"]
    a, b = _final(tmp_path / "a"), _final(tmp_path / "b")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))


def test_default_schedule_is_equal_steps_up_to_the_target():
    assert sparsity_schedule(PruneConfig(sparsity=0.7, initial_sparsity=0.5, rounds=3)) == \
        pytest.approx([0.5, 0.6, 0.7])
    assert sparsity_schedule(PruneConfig(sparsity=0.1, rounds=2)) == pytest.approx([0.0, 0.1])


@pytest.mark.parametrize("keys, message", [
    ({"round_steps": 10, "adapt_at": 10}, r"adapt_at: 10 must be a whole number in \[1, round_steps\) = \[1, 10\)"),
    ({"round_steps": 10, "adapt_at": 0}, "adapt_at: 0"),
    ({"sparsity_schedule": [0.6, 0.5, 0.7]}, "decreases"),
    ({"sparsity_schedule": [0.5, 0.6]}, "ends at 0.6 but the target sparsity is 0.7"),
    ({"rounds": 0}, "rounds: 0"),
])
def test_bad_rounds_are_one_line_errors(tmp_path, keys, message):
    cfg = prune_config("adaptive", sparsity=0.7, **keys)
    with pytest.raises(UserError, match=message):   # before any data is read
        make_method(cfg)
