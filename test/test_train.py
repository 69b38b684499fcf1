"""The Trainer: resume equivalence, schedule, best checkpoint, callbacks, state round trip."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from sprune.checkpoint import flatten_state, load_state, save_state, unflatten_state
from sprune.errors import UserError
from sprune.training import Callback, EpochBatchSampler, TrainConfig, Trainer


class ToyClassifier(nn.Module):
    """Dropout makes the run depend on the RNG state, as real fine-tuning does."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))

    def forward(self, batch):
        logits = self.net(batch["x"])
        return {"loss": nn.functional.cross_entropy(logits, batch["y"]),
                "acc": (logits.argmax(-1) == batch["y"]).float().mean()}


def toy_data(n=37):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=gen)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return TensorDataset(x, y)


def collate(items):
    return {"x": torch.stack([i[0] for i in items]), "y": torch.stack([i[1] for i in items])}


def evaluate(model):
    ds = toy_data(20)
    x, y = ds.tensors
    device = next(model.parameters()).device   # a GPU when a test's config asks for one
    return {"accuracy": float((model.net(x.to(device)).cpu().argmax(-1) == y).float().mean())}


class Kill(Callback):
    name = "kill"

    def __init__(self, at_step):
        self.at_step = at_step

    def on_step_end(self, trainer):
        if trainer.step == self.at_step:
            raise KeyboardInterrupt


class CountSteps(Callback):
    """Stateful callback: its state must survive a resume."""

    name = "count"

    def __init__(self):
        self.count = 0
        self.epochs_ended = 0

    def on_step_end(self, trainer):
        self.count += 1

    def on_epoch_end(self, trainer):
        self.epochs_ended += 1

    def state_dict(self):
        return {"count": self.count, "epochs_ended": self.epochs_ended}

    def load_state_dict(self, state):
        self.count, self.epochs_ended = state["count"], state["epochs_ended"]


def make_trainer(out, callbacks=(), **cfg):
    torch.manual_seed(0)
    config = TrainConfig(**{"max_steps": 23, "batch_size": 5, "lr": 1e-2, "eval_every": 7,
                            "save_every": 4, "seed": 3, "device": "cpu", **cfg})
    return Trainer(ToyClassifier(), toy_data(), collate, config, out, evaluate=evaluate,
                   callbacks=list(callbacks), show_progress=False)


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    full_count = CountSteps()
    full = make_trainer(tmp_path / "full", [full_count])
    full.fit()
    killed = make_trainer(tmp_path / "killed", [CountSteps(), Kill(10)])
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    resumed_count = CountSteps()
    resumed = make_trainer(tmp_path / "killed", [resumed_count])
    assert resumed.step == 0
    resumed.fit(resume=True)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    assert resumed.last_metrics == full.last_metrics
    assert resumed.best_metric == full.best_metric
    assert resumed_count.count == full_count.count == 23
    assert resumed_count.epochs_ended == full_count.epochs_ended == 23 // 8  # ceil(37/5)=8 batches
    events = [json.loads(l)["event"] for l in open(tmp_path / "killed" / "log.jsonl")]
    assert "resume" in events


def test_warmup_then_linear_decay(tmp_path):
    t = make_trainer(tmp_path, max_steps=100, warmup_ratio=0.1, lr=1.0)
    assert t.lr_at(0) == pytest.approx(0.1)
    assert t.lr_at(9) == pytest.approx(1.0)
    assert t.lr_at(10) == pytest.approx(1.0)
    assert t.lr_at(55) == pytest.approx(0.5)
    assert t.lr_at(99) == pytest.approx(1 / 90)


def test_epochs_set_the_number_of_updates_and_passes(tmp_path):
    t = make_trainer(tmp_path, max_steps=None, epochs=2.0)
    assert t.max_steps == 16
    summary = t.fit()
    assert summary["passes"] == pytest.approx(2.0)
    assert (tmp_path / "checkpoint" / "best").is_dir()
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 16


def test_sampler_is_a_permutation_and_restartable():
    s = EpochBatchSampler(11, 3, seed=5)
    s.set_position(2)
    full = list(s)
    assert sorted(i for b in full for i in b) == list(range(11))
    s.set_position(2, start_batch=2)
    assert list(s) == full[2:]
    s.set_position(3)
    assert list(s) != full


def test_empty_training_set_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="empty"):
        Trainer(ToyClassifier(), TensorDataset(torch.zeros(0, 6)), collate, TrainConfig(), tmp_path)


def test_resume_with_another_length_is_a_user_error(tmp_path):
    make_trainer(tmp_path).fit()
    with pytest.raises(UserError, match="same config"):
        make_trainer(tmp_path, max_steps=30).fit(resume=True)


def test_state_tree_round_trip(tmp_path):
    opt = torch.optim.AdamW(nn.Linear(2, 2).parameters())
    opt.state[opt.param_groups[0]["params"][0]]["exp_avg"] = torch.ones(2, 2)
    tree = {"a": torch.arange(3), 1: {"b": (1, 2.5)}, "c": [None, "x", True],
            "opt": opt.state_dict()}
    tensors, skeleton = flatten_state(tree)
    json.dumps(skeleton)
    back = unflatten_state(tensors, skeleton)
    assert torch.equal(back["a"], tree["a"]) and back[1]["b"] == (1, 2.5)
    assert back["opt"]["param_groups"][0]["betas"] == (0.9, 0.999)
    save_state(tmp_path / "ck", tree)
    loaded = load_state(tmp_path / "ck")
    assert torch.equal(loaded["opt"]["state"][0]["exp_avg"], torch.ones(2, 2))
    with pytest.raises(UserError, match="not a sprune checkpoint"):
        load_state(tmp_path)


@pytest.mark.parametrize("key,value", [("eval_every", 0), ("save_every", -1), ("batch_size", 0),
                                       ("max_steps", 0), ("epochs", 0.0), ("precision", "fp16")])
def test_train_config_rejects_values_the_loop_cannot_use(key, value):
    with pytest.raises(UserError, match=f"train.{key}"):
        TrainConfig(**{key: value})


class DtypeSpy(Callback):
    """Records the dtype of the first layer's output in each training forward."""

    name = "dtype_spy"

    def __init__(self):
        self.dtypes = []
        self.attention = []   # SDPA backends allowed during each forward

    def on_train_start(self, trainer):
        from torch.nn.attention import _cur_sdpa_kernel_backends

        def hook(module, inputs, output):
            self.dtypes.append(output.dtype)
            self.attention.append(tuple(_cur_sdpa_kernel_backends()))

        trainer.model.net[0].register_forward_hook(hook)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_bf16_precision_trains_under_autocast_and_keeps_float32_weights(tmp_path, precision,
                                                                         dtype):
    spy = DtypeSpy()
    trainer = make_trainer(tmp_path, [spy], max_steps=6, eval_every=3, precision=precision)
    summary = trainer.fit()
    # 6 updates run the layer in `dtype`; the evaluations after updates 3 and 6 in float32
    evaluations = len(spy.dtypes) - 6
    assert evaluations >= 2
    assert spy.dtypes.count(dtype) == 6 + (evaluations if dtype == torch.float32 else 0)
    # on a CPU, bfloat16 updates take SDPA's math backend (its fused backward is slow there)
    from torch.nn.attention import SDPBackend

    math_only = [backends == (SDPBackend.MATH,) for backends in spy.attention]
    assert math_only == [precision == "bf16" and dt == torch.bfloat16 for dt in spy.dtypes]
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert summary["final_metrics"]["accuracy"] > 0


def test_length_buckets_cover_every_example_once_and_cut_padding():
    lengths = [int(x) for x in torch.randint(1000, 60000, (203,), generator=torch.Generator().manual_seed(1))]
    plain = EpochBatchSampler(203, 8, seed=3)
    bucketed = EpochBatchSampler(203, 8, seed=3, lengths=lengths, bucket_batches=4)
    for epoch in (0, 1):
        plain.set_position(epoch)
        bucketed.set_position(epoch)
        batches = list(bucketed)
        assert len(batches) == bucketed.batches_per_epoch() == len(list(plain))
        assert sorted(i for b in batches for i in b) == list(range(203))

        def padding(bs):
            return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b)
                       for b in bs)
        assert padding(batches) < 0.5 * padding(list(plain))
    bucketed.set_position(0)
    first = list(bucketed)
    bucketed.set_position(1)
    assert list(bucketed) != first                      # a new make-up every epoch
    bucketed.set_position(1, start_batch=5)
    again = EpochBatchSampler(203, 8, seed=3, lengths=lengths, bucket_batches=4)
    again.set_position(1)
    assert list(bucketed) == list(again)[5:]            # restartable mid-epoch


def test_grouped_batches_are_monolingual_and_cover_every_example_once():
    groups = ["aa"] * 7 + ["bb"] * 5 + ["cc"] * 2
    lengths = [(i * 37) % 11 for i in range(len(groups))]
    for with_lengths in (None, lengths):
        sampler = EpochBatchSampler(len(groups), 3, seed=4, lengths=with_lengths, groups=groups)
        assert sampler.batches_per_epoch() == 3 + 2 + 1
        for epoch in (0, 1):
            sampler.set_position(epoch)
            batches = list(sampler)
            assert len(batches) == sampler.batches_per_epoch()
            assert sorted(i for b in batches for i in b) == list(range(len(groups)))
            assert all(len({groups[i] for i in b}) == 1 for b in batches)
            sampler.set_position(epoch, 2)   # a resume mid-epoch sees the same remaining batches
            assert list(sampler) == batches[2:]


@pytest.mark.parametrize("lengths", [None, [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]])
def test_sharded_batches_split_the_one_process_batches(lengths):
    """Process r of N takes examples r, r + N, ... of each global batch: together the shards
    are the one-process batches; a global batch smaller than N gives a stand-in shard of
    weight 0 (its first example again)."""
    one = EpochBatchSampler(11, 4, seed=2, lengths=lengths)
    for epoch in range(2):
        one.set_position(epoch)
        shards = []
        for rank in range(3):
            sampler = EpochBatchSampler(11, 4, seed=2, lengths=lengths, rank=rank, world_size=3)
            sampler.set_position(epoch)
            shards.append((list(sampler), [sampler.shard_weight(i) for i in range(3)]))
        for b, batch in enumerate(one.epoch_batches()):
            parts = [shards[rank][0][b] for rank in range(3)]
            weights = [shards[rank][1][b] for rank in range(3)]
            real = [part for part, w in zip(parts, weights) if w > 0]
            assert sorted(i for part in real for i in part) == sorted(batch)
            assert sum(weights) == pytest.approx(1.0)
            for part, w in zip(parts, weights):
                assert w == pytest.approx(len(part) / len(batch)) if w > 0 else part == batch[:1]
    last = EpochBatchSampler(5, 4, seed=0, shuffle=False, rank=1, world_size=2)
    assert last.epoch_batches() == [[1, 3], [4]] and last.shard_weight(1) == 0.0
