"""Language pathways (paper 003) on a toy two-language task: a batch trains only its
pathway, evaluation goes through each pathway, Dynamic ASR Pathways choose from their own
pathway and the unused weights, LAP becomes language-specific, resume, bad input."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from sprune.errors import UserError
from sprune.prune.mask import Mask
from sprune.prune.methods import PruneConfig, PruneContext, make_method
from sprune.prune.methods.base import load_model_state
from sprune.training import Callback, TrainConfig, Trainer

from test_methods import GROUPS, KillAt, Toy

LANGS = ("aa", "bb")


class TwoLanguages(Dataset):
    """x [6] -> class y; the rule differs by language, so pathways have something to learn."""

    def __init__(self, n=48, seed=1, languages=LANGS):
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, generator=gen)
        self.lang = [languages[i % len(languages)] for i in range(n)]
        self.y = torch.tensor([int(x[0] > 0) + int(x[1] > 0.5) if lang == "aa"
                               else int(x[2] > 0) + int(x[3] > -0.5)
                               for x, lang in zip(self.x, self.lang)])

    def __len__(self):
        return len(self.lang)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i], "lang": self.lang[i]}

    def languages(self):
        return list(self.lang)


def collate(items):
    return {"x": torch.stack([i["x"] for i in items]), "y": torch.stack([i["y"] for i in items]),
            "lang": [i["lang"] for i in items]}


def build_model():
    torch.manual_seed(0)
    return Toy()


class Recorder:
    """evaluate_language that records which scope weights were non-zero at each call."""

    def __init__(self):
        self.seen = []

    def __call__(self, model, language):
        data = TwoLanguages(30, seed=2)
        rows = [i for i, lang in enumerate(data.lang) if lang == language]
        params = dict(model.named_parameters())
        self.seen.append((language, Mask.from_nonzero(params, GROUPS["hidden"])))
        logits = model.net(data.x[rows])
        return {"accuracy": float((logits.argmax(-1) == data.y[rows]).float().mean()),
                "logit_sum": float(logits.sum())}


def language_batches(language, n, batch_size=8):
    data = TwoLanguages(n * batch_size * 2, seed=3)
    rows = [i for i, lang in enumerate(data.lang) if lang == language]
    for b in range(n):
        yield collate([data[i] for i in rows[b * batch_size:(b + 1) * batch_size]])


def context(tmp_path, recorder=None, extra_callbacks=(), data=None, **train):
    config = TrainConfig(**{"max_steps": 24, "batch_size": 8, "lr": 5e-3, "eval_every": 12,
                            "save_every": 5, "device": "cpu", "seed": 0, **train})
    recorder = recorder or Recorder()
    data = data or TwoLanguages()

    def make_trainer(model, out, callbacks, cfg):
        return Trainer(model, data, collate, cfg, out, evaluate=lambda m: {"accuracy": 0.0},
                       callbacks=list(callbacks) + list(extra_callbacks), show_progress=False)

    return PruneContext(build_model=build_model, groups=GROUPS, train_config=config,
                        make_trainer=make_trainer, evaluate=lambda m: {"accuracy": 0.0},
                        log=lambda msg: None, language_batches=language_batches,
                        train_batches=lambda n: language_batches("aa", n),
                        languages=list(LANGS), evaluate_language=recorder)


def config(**kw):
    return PruneConfig(**{"method": "pathways", "sparsity": 0.5, "scope": None,
                          "include": ["hidden"], **kw})


def language_masks(tmp_path, sparsity=0.5):
    """Two random masks at `sparsity` with different seeds, saved as mask folders."""
    paths = {}
    model = build_model()
    for seed, language in enumerate(LANGS):
        gen = torch.Generator().manual_seed(10 + seed)
        mask = {}
        for name in GROUPS["hidden"]:
            shape = dict(model.named_parameters())[name].shape
            order = torch.randperm(shape.numel(), generator=gen)
            keep = torch.zeros(shape.numel(), dtype=torch.bool)
            keep[order[:round((1 - sparsity) * shape.numel())]] = True
            mask[name] = keep.view(shape)
        Mask(mask).save(tmp_path / "masks" / language)
        paths[language] = str(tmp_path / "masks" / language)
    return paths


class StepSpy(Callback):
    """After the pathways callback: the weights a step's forward saw, and what it changed."""

    name = "spy"

    def __init__(self):
        self.steps = []

    def on_step_start(self, trainer):
        params = dict(trainer.model.named_parameters())
        self.before = {n: params[n].detach().clone() for n in GROUPS["hidden"]}
        self.language = trainer.batch["lang"][0]
        pathways = next(c for c in trainer.callbacks if c.name == "pathways")
        self.mask = {n: pathways.masks[self.language][n].clone() for n in GROUPS["hidden"]}

    def on_step_end(self, trainer):
        params = dict(trainer.model.named_parameters())
        self.steps.append((self.language, self.before,
                           {n: params[n].detach().clone() for n in GROUPS["hidden"]},
                           self.mask, trainer.step))


def test_a_batch_sees_and_trains_only_its_pathway(tmp_path):
    spy, recorder = StepSpy(), Recorder()
    paths = language_masks(tmp_path)
    outcome = make_method(config(pathway_masks=paths)).run(
        context(tmp_path, recorder, extra_callbacks=[spy]), tmp_path / "run")
    assert {lang for lang, *_ in spy.steps} == set(LANGS)
    masks = {lang: Mask.load(path) for lang, path in paths.items()}
    previous_after = None
    for language, seen, after, _, _ in spy.steps:
        keep = masks[language]
        for n in GROUPS["hidden"]:
            # the forward saw the pathway only: everything outside it was zero
            assert not seen[n][~keep[n]].any()
            # ... and the update changed nothing outside it (Adam moments of the other
            # language are non-zero there, so this checks the restore)
            if previous_after is not None:
                assert torch.equal(after[n][~keep[n]], previous_after[n][~keep[n]])
            assert (after[n][keep[n]] != seen[n][keep[n]]).any()
        previous_after = after
    # each evaluation ran each language through its own pathway
    assert {lang for lang, _ in recorder.seen} == set(LANGS)
    for language, nonzero in recorder.seen:
        assert all(not (nonzero[n] & ~masks[language][n]).any() for n in nonzero)
    assert set(outcome.dev) >= {"accuracy", "accuracy/aa", "accuracy/bb"}
    assert outcome.dev["accuracy"] == pytest.approx(
        (outcome.dev["accuracy/aa"] + outcome.dev["accuracy/bb"]) / 2)
    # the final model keeps the union of the pathways, each saved on its own
    union = masks["aa"].union(masks["bb"])
    assert Mask.load(tmp_path / "run" / "mask") == union
    assert Mask.load(tmp_path / "run" / "pathways" / "bb") == masks["bb"]
    model = build_model()
    load_model_state(model, tmp_path / "run" / "final")
    params = dict(model.named_parameters())
    assert all(not params[n][~union[n]].any() for n in union)
    assert outcome.extra["iou"]["aa|bb"] == pytest.approx(masks["aa"].iou(masks["bb"]))


def test_dynamic_pathways_choose_from_their_own_and_the_unused_weights(tmp_path):
    spy = StepSpy()
    paths = language_masks(tmp_path, sparsity=0.4)
    cfg = config(pathway_masks=paths, dynamic=True, sparsity_schedule=[0.4, 0.5],
                 round_steps=8, adapt_at=4, criterion="taylor", criterion_batches=2)
    outcome = make_method(cfg).run(context(tmp_path, extra_callbacks=[spy]), tmp_path / "run")
    events = outcome.extra["events"]
    assert [(e["step"], e["kind"]) for e in events] == [(4, "adapt"), (8, "prune"),
                                                        (12, "adapt")]
    rounds = sorted((tmp_path / "run" / "rounds").iterdir())
    assert [r.name for r in rounds] == ["000000_initial", "000004_adapt", "000008_prune",
                                        "000012_adapt"]
    for before_dir, after_dir, event in zip(rounds, rounds[1:], events):
        before = {lang: Mask.load(before_dir / lang) for lang in LANGS}
        used = before["aa"].union(before["bb"])
        for lang in LANGS:
            after = Mask.load(after_dir / lang)
            assert after.sparsity() == pytest.approx(event["target"], abs=0.01)
            for n in after:   # only its own pathway or weights no language used
                assert not (after[n] & ~(before[lang][n] | ~used[n])).any()
                if event["kind"] == "prune":   # a pruning step only removes weights
                    assert not (after[n] & ~before[lang][n]).any()
    # the masks in force during each step are the latest saved ones
    for language, _, _, mask, step in spy.steps:
        latest = [r for r in rounds if int(r.name[:6]) < step][-1]
        assert all(torch.equal(mask[n], Mask.load(latest / language)[n]) for n in mask)
    assert Mask.load(tmp_path / "run" / "pathways" / "aa") == Mask.load(rounds[-1] / "aa")


def test_lap_becomes_language_specific_with_taylor(tmp_path):
    cfg = config(dynamic=True, sparsity=0.5, sparsity_schedule=[0.5], round_steps=6,
                 adapt_at=3, criterion="taylor", criterion_batches=2)
    outcome = make_method(cfg).run(context(tmp_path, max_steps=6), tmp_path / "run")
    assert outcome.extra["initialisation"] == "LAP"
    initial = [Mask.load(tmp_path / "run" / "rounds" / "000000_initial" / l) for l in LANGS]
    assert initial[0] == initial[1]
    final = [Mask.load(tmp_path / "run" / "pathways" / l) for l in LANGS]
    assert final[0] != final[1] and 0.0 < outcome.extra["iou"]["aa|bb"] < 1.0


def test_killed_dynamic_run_resumes_to_the_same_pathways(tmp_path):
    paths = language_masks(tmp_path, sparsity=0.4)
    cfg = config(pathway_masks=paths, dynamic=True, sparsity_schedule=[0.4, 0.5],
                 round_steps=8, adapt_at=4)
    full = make_method(cfg).run(context(tmp_path / "a"), tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):   # after the pruning step at 8 (checkpoint at 5)
        make_method(cfg).run(context(tmp_path / "b", extra_callbacks=[KillAt(9, "finetune")]),
                             tmp_path / "b")
    resumed = make_method(cfg).run(context(tmp_path / "b"), tmp_path / "b")
    for lang in LANGS:
        assert Mask.load(tmp_path / "a" / "pathways" / lang) == \
            Mask.load(tmp_path / "b" / "pathways" / lang)
    assert resumed.dev == full.dev and resumed.extra["events"] == full.extra["events"]


def test_bad_input_is_one_line(tmp_path):
    paths = language_masks(tmp_path)
    only_aa = config(pathway_masks={"aa": paths["aa"]})
    with pytest.raises(UserError, match="training language 'bb' has no pathway mask"):
        make_method(only_aa).run(context(tmp_path), tmp_path / "run")
    with pytest.raises(UserError, match="pathway_masks: cc: no mask at"):
        make_method(config(pathway_masks={**paths, "cc": str(tmp_path / "nowhere")}))
    with pytest.raises(UserError, match="not both"):
        make_method(config(pathway_masks=paths, mask_from=paths["aa"]))
    with pytest.raises(UserError, match="adapt_at: 8"):
        make_method(config(dynamic=True, round_steps=8, adapt_at=8))
    with pytest.raises(UserError, match="decreases"):
        make_method(config(dynamic=True, sparsity=0.5, sparsity_schedule=[0.6, 0.5]))
    # masks of another model: a parameter of another shape
    Mask({"net.0.weight": torch.ones(5, 6, dtype=torch.bool),
          "net.2.weight": torch.ones(24, 24, dtype=torch.bool)}).save(tmp_path / "other")
    with pytest.raises(UserError, match="net.0.weight"):
        make_method(config(pathway_masks={**paths, "bb": str(tmp_path / "other")})).run(
            context(tmp_path), tmp_path / "run2")
    # mixed-language batches (the sampler groups by language, so only a broken data set)
    class Mixed(TwoLanguages):
        def languages(self):
            return ["aa"] * len(self.lang)

    with pytest.raises(UserError, match="mixes languages"):
        make_method(config(pathway_masks=paths)).run(context(tmp_path, data=Mixed()),
                                                     tmp_path / "run3")
