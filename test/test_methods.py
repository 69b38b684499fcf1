"""Pruning methods end to end on a toy task: masks, sparsities, IMP levels, PARP regrowth,
resume equivalence."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from sprune.errors import UserError
from sprune.prune.mask import Mask
from sprune.prune.methods import METHODS, PruneConfig, PruneContext, make_method
from sprune.prune.methods.base import load_model_state
from sprune.training import Callback, TrainConfig, Trainer

GROUPS = {"hidden": ["net.0.weight", "net.2.weight"]}


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(),
                                 nn.Linear(24, 3))

    def forward(self, batch):
        logits = self.net(batch["x"])
        return {"loss": nn.functional.cross_entropy(logits, batch["y"])}


def dataset(n=40, seed=1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    return TensorDataset(x, (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long())


def collate(items):
    return {"x": torch.stack([i[0] for i in items]), "y": torch.stack([i[1] for i in items])}


def evaluate(model):
    x, y = dataset(30, seed=2).tensors
    device = next(model.parameters()).device   # a GPU when a test's config asks for one
    logits = model.net(x.to(device)).cpu()
    # logit_sum: a continuous value that tells apart any two different weight states
    return {"accuracy": float((logits.argmax(-1) == y).float().mean()),
            "logit_sum": float(logits.sum())}


def build_model():
    torch.manual_seed(0)
    return Toy()


class Spy(Callback):
    """Records, after each update, how many weights the mask prunes are non-zero."""

    name = "spy"

    def __init__(self, method_callback_holder):
        self.holder = method_callback_holder
        self.regrown = []

    def on_step_end(self, trainer):
        cb = next(c for c in trainer.callbacks if c.name == "reprune")
        params = dict(trainer.model.named_parameters())
        self.regrown.append(sum(int((params[n][~m] != 0).sum()) for n, m in cb.mask.items()))


def context(tmp_path, dense_dir=None, extra_callbacks=(), **train):
    config = TrainConfig(**{"max_steps": 24, "batch_size": 8, "lr": 5e-3, "eval_every": 1000,
                            "save_every": 5, "device": "cpu", "seed": 0, **train})

    def make_trainer(model, out, callbacks, cfg):
        return Trainer(model, dataset(), collate, cfg, out, evaluate=evaluate,
                       callbacks=list(callbacks) + list(extra_callbacks), show_progress=False)

    return PruneContext(build_model=build_model, groups=GROUPS, train_config=config,
                        make_trainer=make_trainer, evaluate=evaluate, dense_dir=dense_dir,
                        log=lambda msg: None, train_batches=train_batches)


def train_batches(n, batch_size=8):
    """The data-driven criteria's batches: the first n * batch_size examples of a fixed
    dataset (seed 3), in order, never the trainer's sampler."""
    x, y = dataset(n * batch_size, seed=3).tensors
    for b in range(n):
        rows = slice(b * batch_size, (b + 1) * batch_size)
        yield {"x": x[rows], "y": y[rows]}


def prune_config(method, **kw):
    return PruneConfig(**{"method": method, "sparsity": 0.5, "scope": None,
                          "include": ["hidden"], "reprune_every": 5, **kw})


def scoped_zero_fraction(model):
    params = dict(model.named_parameters())
    names = GROUPS["hidden"]
    return sum(int((params[n] == 0).sum()) for n in names) / sum(params[n].numel() for n in names)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(UserError, match="known: dense, rp, mpi, omp, imp, parp, parp-p"):
        make_method(PruneConfig(method="lottery"))
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        make_method(PruneConfig(method="mpi", sparsity=1.0))


@pytest.mark.parametrize("method", ["rp", "mpi"])
def test_fixed_mask_methods_keep_the_pruned_weights_at_zero(tmp_path, method):
    outcome = make_method(prune_config(method)).run(context(tmp_path), tmp_path)
    assert outcome.achieved_sparsity == pytest.approx(0.5)
    mask = Mask.load(tmp_path / "mask")
    model = build_model()
    load_model_state(model, tmp_path / "final")
    params = dict(model.named_parameters())
    for name, keep in mask.items():
        assert not params[name][~keep].any()
    if method == "mpi":   # the mask is magnitude on the pretrained weights
        theta0 = dict(build_model().named_parameters())
        flat = torch.cat([theta0[n].abs().flatten() for n in GROUPS["hidden"]])
        threshold = flat.kthvalue(flat.numel() // 2).values
        for name, keep in mask.items():
            assert torch.equal(keep, theta0[name].abs() > threshold)


def test_parp_lets_weights_regrow_and_ends_exactly_at_the_target(tmp_path):
    spy = Spy(None)
    ctx = context(tmp_path, extra_callbacks=[spy], max_steps=23)
    outcome = make_method(prune_config("parp")).run(ctx, tmp_path)
    # between re-prunes (every 5 updates) pruned weights come back; right after, none do
    assert max(spy.regrown) > 0
    assert [spy.regrown[i - 1] for i in (5, 10, 15, 20, 23)] == [0, 0, 0, 0, 0]
    n = sum(p.numel() for p in (build_model().net[0].weight, build_model().net[2].weight))
    assert outcome.achieved_sparsity == round(0.5 * n) / n
    assert Mask.load(tmp_path / "mask").sparsity() == pytest.approx(0.5)
    assert 0.5 < outcome.extra["iou_with_initial_mask"] <= 1.0


def test_parp_p_prunes_progressively_up_to_the_target(tmp_path):
    cfg = prune_config("parp-p", sparsity=0.6, initial_sparsity=0.2, progressive_until=0.5)
    make_method(cfg).run(context(tmp_path, max_steps=40), tmp_path)
    log = [json.loads(l) for l in open(tmp_path / "finetune" / "log.jsonl")]
    sparsities = [e["sparsity"] for e in log if e["event"] == "reprune"]
    assert sparsities[0] > 0.2 and sparsities == sorted(sparsities)
    assert sparsities[-1] == pytest.approx(0.6) and sparsities.count(0.6) >= 3
    assert Mask.load(tmp_path / "initial_mask").sparsity() == pytest.approx(0.2)
    assert Mask.load(tmp_path / "mask").sparsity() == pytest.approx(0.6)


def test_imp_levels_follow_p_and_masks_are_monotone(tmp_path):
    cfg = prune_config("imp", imp_fraction=0.2, imp_rewind_epochs=1, imp_level_epochs=1)
    outcome = make_method(cfg).run(context(tmp_path), tmp_path)
    levels = json.loads((tmp_path / "levels.json").read_text())
    assert [round(l["sparsity"], 3) for l in levels] == [0.0, 0.2, 0.36, 0.488, 0.5]
    masks = [Mask.load(tmp_path / f"level{i}" / "mask") for i in range(1, 5)]
    for earlier, later in zip(masks, masks[1:]):
        assert all(not (later[n] & ~earlier[n]).any() for n in earlier)
    ticket = outcome.extra["ticket_level"]
    best = max(levels[1:], key=lambda l: (l["dev"]["accuracy"], l["level"]))["level"]
    assert ticket == best
    assert outcome.achieved_sparsity == pytest.approx(masks[ticket - 1].sparsity())
    # passes: level 0 (k + n = 2 epochs), 4 levels of n = 1 epoch, retrain from k to the end
    assert outcome.passes == pytest.approx(2 + 4 * 1 + (24 - 5) / 5)


def test_imp_target_ticket_prunes_the_last_level_without_training_it(tmp_path):
    cfg = prune_config("imp", imp_fraction=0.2, imp_rewind_epochs=1, imp_level_epochs=1,
                       imp_ticket="target")
    outcome = make_method(cfg).run(context(tmp_path), tmp_path)
    levels = json.loads((tmp_path / "levels.json").read_text())
    assert [round(l["sparsity"], 3) for l in levels] == [0.0, 0.2, 0.36, 0.488, 0.5]
    assert levels[-1]["dev"] is None and levels[-1]["trained"] is False
    assert all(l["dev"] is not None for l in levels[:-1])
    assert not (tmp_path / "level4" / "log.jsonl").exists()
    assert outcome.extra["ticket_level"] == 4
    assert Mask.load(tmp_path / "mask") == Mask.load(tmp_path / "level4" / "mask")
    assert outcome.achieved_sparsity == pytest.approx(0.5)
    # passes: level 0 (k + n = 2 epochs), 3 trained levels of n = 1 epoch, the retraining
    assert outcome.passes == pytest.approx(2 + 3 * 1 + (24 - 5) / 5)


def test_omp_needs_the_dense_run_and_prunes_its_weights(tmp_path):
    with pytest.raises(UserError, match="dense"):
        make_method(prune_config("omp")).run(context(tmp_path, dense_dir=tmp_path / "none"),
                                             tmp_path / "omp")
    dense = make_method(prune_config("dense")).run(context(tmp_path), tmp_path / "dense")
    assert dense.achieved_sparsity == 0.0
    outcome = make_method(prune_config("omp")).run(
        context(tmp_path, dense_dir=tmp_path / "dense"), tmp_path / "omp")
    finetuned = build_model()
    load_model_state(finetuned, tmp_path / "dense" / "final")
    params = dict(finetuned.named_parameters())
    flat = torch.cat([params[n].abs().flatten() for n in GROUPS["hidden"]])
    threshold = flat.kthvalue(flat.numel() // 2).values
    mask = Mask.load(tmp_path / "omp" / "mask")
    for name in GROUPS["hidden"]:
        assert torch.equal(mask[name], params[name].abs() > threshold)
    assert outcome.passes == pytest.approx(dense.passes * 2)


@pytest.mark.parametrize("method", ["dense", "rp", "mpi", "omp", "imp", "parp", "parp-p"])
def test_outcome_dev_metrics_are_those_of_the_saved_final_weights(tmp_path, method):
    # finish() reuses the trainer's evaluation after the last update: it must be the model saved
    cfg = prune_config(method, imp_rewind_epochs=1, imp_level_epochs=1, initial_sparsity=0.2,
                       progressive_until=0.5)
    if method == "omp":
        make_method(prune_config("dense")).run(context(tmp_path), tmp_path / "dense")
    outcome = make_method(cfg).run(context(tmp_path, dense_dir=tmp_path / "dense"),
                                   tmp_path / method)
    model = build_model()
    load_model_state(model, tmp_path / method / "final")
    model.eval()
    with torch.no_grad():
        fresh = evaluate(model)
    assert outcome.dev == pytest.approx(fresh, rel=1e-6)


class KillAt(Callback):
    name = "kill"

    def __init__(self, step, folder):
        self.step, self.folder = step, folder

    def on_step_end(self, trainer):
        if trainer.step == self.step and trainer.out_dir.name == self.folder:
            raise KeyboardInterrupt


@pytest.mark.parametrize("method, folder, step, criterion", [
    ("parp", "finetune", 13, "magnitude"), ("imp", "level2", 8, "magnitude"),
    # data-driven re-prunes inside the run (steps 5, 10 before the kill, 15, 20, 24 after)
    ("parp", "finetune", 13, "taylor"), ("parp-p", "finetune", 13, "wanda"),
    ("imp", "level2", 8, "taylor")])
def test_killed_method_resumes_to_the_same_mask_and_metric(tmp_path, method, folder, step,
                                                           criterion):
    cfg = prune_config(method, imp_rewind_epochs=1, imp_level_epochs=1, criterion=criterion,
                       criterion_batches=2)
    full = make_method(cfg).run(context(tmp_path / "a"), tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        make_method(cfg).run(context(tmp_path / "b", extra_callbacks=[KillAt(step, folder)]),
                             tmp_path / "b")
    resumed = make_method(cfg).run(context(tmp_path / "b"), tmp_path / "b")
    assert Mask.load(tmp_path / "a" / "mask") == Mask.load(tmp_path / "b" / "mask")
    assert resumed.dev == full.dev and resumed.passes == pytest.approx(full.passes)
