"""Intent task: AM-Softmax against a hand computation, mean and statistics pooling,
dataset/collate, evaluation."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from sprune.data.dataset import AudioDataset, collate_audio
from sprune.data.datadir import DataDir
from sprune.errors import UserError
from sprune.tasks.amsoftmax import AMSoftmax
from sprune.tasks.intent import (IntentClassifier, IntentHeadConfig, evaluate_intents, masked_mean,
                                  masked_std, pool_frames)


def test_amsoftmax_matches_hand_computation():
    head = AMSoftmax(embed_dim=2, num_classes=3, scale=10.0, margin=0.2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, -1.0]]))
    x = torch.tensor([[3.0, 4.0]])  # unit vector (0.6, 0.8)
    loss, cos = head(x, torch.tensor([1]))
    c = [0.6, 0.8, -(0.6 + 0.8) / math.sqrt(2)]
    assert cos[0].tolist() == pytest.approx(c, abs=1e-6)
    logits = [10 * c[0], 10 * (c[1] - 0.2), 10 * c[2]]
    expected = -logits[1] + math.log(sum(math.exp(v) for v in logits))
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_margin_makes_the_loss_larger():
    torch.manual_seed(0)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    plain, margin = AMSoftmax(4, 3, margin=0.0), AMSoftmax(4, 3, margin=0.3)
    margin.load_state_dict(plain.state_dict())
    assert float(margin(x, y)[0]) > float(plain(x, y)[0])


def test_masked_mean_ignores_padding():
    h = torch.tensor([[[1.0], [3.0], [100.0]], [[2.0], [4.0], [6.0]]])
    assert masked_mean(h, torch.tensor([2, 3])).squeeze(-1).tolist() == [2.0, 4.0]


def test_masked_std_matches_hand_computation_and_ignores_padding():
    # Row 0 has 2 valid frames and a huge padded one; row 1 has 3 valid frames.
    h = torch.tensor([[[1.0, 10.0], [3.0, 10.0], [1e20, -1e20]],
                      [[2.0, 0.0], [4.0, 0.0], [9.0, 3.0]]], requires_grad=True)
    std = masked_std(h, torch.tensor([2, 3]), eps=1e-6)
    # Row 0: (1, 3) -> mean 2, deviations +-1, std 1; (10, 10) -> variance 0, floored at eps.
    # Row 1: (2, 4, 9) -> mean 5, deviations (-3, -1, 4), variance 26/3;
    #        (0, 0, 3) -> mean 1, deviations (-1, -1, 2), variance 6/3.
    expected = [[1.0, math.sqrt(1e-6)], [math.sqrt(26 / 3), math.sqrt(2.0)]]
    assert std.tolist() == [pytest.approx(row, rel=1e-5) for row in expected]
    std.sum().backward()
    assert torch.isfinite(h.grad).all()
    assert not h.grad[0, 2].any()            # padding gets no gradient
    assert not h.grad[0, :, 1].any()         # nor does a floored (constant) feature


def test_stats_pooling_width_and_finite_gradients_on_constant_frames():
    torch.manual_seed(0)
    model = IntentClassifier(FakeUpstream(), 4, 3, IntentHeadConfig(pooling="stats"))
    assert model.input_norm.num_features == 8 and model.mlp[0].in_features == 8
    # Constant valid audio, silent padding: every valid frame of the hidden state is the same
    # (std 0), the padded frames differ from them (std > 0 if they counted).
    wavs, lengths = torch.zeros(2, 960), torch.tensor([800, 400])
    wavs[0, :800] = wavs[1, :400] = 0.5
    out = model.upstream(wavs, lengths)
    pooled = pool_frames(out.hidden_states[-1], out.lengths, "stats")
    assert pooled.shape == (2, 8)
    assert torch.equal(pooled[:, :4], masked_mean(out.hidden_states[-1], out.lengths))
    assert torch.allclose(pooled[:, 4:], torch.full((2, 4), 1e-3))   # sqrt(eps)
    assert model.embed(wavs, lengths).shape == (2, 128)
    loss = model({"wavs": wavs, "lengths": lengths, "intent": torch.tensor([0, 2])})["loss"]
    loss.backward()
    assert torch.isfinite(loss)
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_mean_pooling_is_the_default_and_unchanged():
    torch.manual_seed(0)
    model = IntentClassifier(FakeUpstream(), 4, 3)
    assert model.config.pooling == "mean"
    assert model.input_norm.num_features == 4 and model.mlp[0].in_features == 4
    model.eval()
    wavs, lengths = torch.randn(2, 960), torch.tensor([960, 480])
    out = model.upstream(wavs, lengths)
    hidden, frames = out.hidden_states[-1], out.lengths
    pooled = masked_mean(hidden, frames)
    valid = (torch.arange(hidden.shape[1])[None, :] < frames[:, None]).float().unsqueeze(-1)
    assert torch.allclose(pooled, (hidden * valid).sum(1) / valid.sum(1))   # the old formula
    assert torch.equal(pool_frames(hidden, frames), pooled)
    assert torch.allclose(model.embed(wavs, lengths), model.mlp(model.input_norm(pooled)))


class FakeUpstream(nn.Module):
    """Frames of 80 samples; the hidden state is a projection of per-frame energy."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(1, 4)

    def forward(self, wavs, lengths):
        frames = wavs[:, : wavs.shape[1] // 80 * 80].reshape(wavs.shape[0], -1, 80)
        h = self.proj(frames.pow(2).mean(-1, keepdim=True))
        return SimpleNamespace(hidden_states=[h], lengths=lengths // 80)


def test_dataset_collate_and_evaluation(tmp_path, make_data_dir):
    path = make_data_dir(tmp_path, n_utts=6, langs=("en-US", "fr-FR"), seconds=(0.1, 0.2))
    intents = sorted(set(DataDir.load(path).utt2intent.values()))
    ds = AudioDataset(DataDir.load(path), intents=intents, preload=True)
    items = [ds[i] for i in range(len(ds))]
    batch = collate_audio(items)
    lengths = [len(it["wav"]) for it in items]
    assert sorted(set(lengths)) == [1600, 3200]
    assert batch["wavs"].shape == (6, 3200) and batch["lengths"].tolist() == lengths
    for row, it in enumerate(items):
        assert torch.equal(batch["wavs"][row, :lengths[row]], it["wav"])
        assert not batch["wavs"][row, lengths[row]:].any()
    assert batch["intent"].dtype == torch.long and len(batch["lang"]) == 6
    model = IntentClassifier(FakeUpstream(), 4, len(intents))
    out = model(batch)
    out["loss"].backward()
    assert model.upstream.proj.weight.grad is not None
    metrics = evaluate_intents(model, ds, batch_size=4)
    assert set(metrics) == {"accuracy", "accuracy/en-US", "accuracy/fr-FR"}
    assert 0.0 <= metrics["accuracy"] <= 1.0
    # Evaluation batches are length-sorted: every utterance once, one length per batch here.
    batches = ds.length_sorted_batches(3)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert [sorted({lengths[i] for i in b}) for b in batches] == [[1600], [3200]]
    model.eval()
    one_by_one = [int(model.predict(it["wav"][None], torch.tensor([len(it["wav"])]))[0] ==
                      it["intent"]) for it in items]
    assert metrics["accuracy"] == pytest.approx(sum(one_by_one) / 6)


def test_unknown_intent_and_short_audio_are_user_errors(tmp_path, make_data_dir):
    path = make_data_dir(tmp_path, n_utts=4)
    with pytest.raises(UserError, match="not in the training intents"):
        AudioDataset(DataDir.load(path), intents=["abroad"])
    short = make_data_dir(tmp_path, n_utts=2, seconds=0.01, name="short")
    with pytest.raises(UserError, match="receptive field"):
        AudioDataset(DataDir.load(short), preload=True)


def test_pooled_standardizer_uses_batch_statistics_and_survives_a_batch_of_one():
    from sprune.tasks.intent import PooledStandardizer
    norm = PooledStandardizer(3)
    x = torch.tensor([[1.0, 10.0, -2.0], [3.0, 30.0, 2.0]])
    expected = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + norm.eps)
    assert torch.allclose(norm(x), expected, atol=1e-5)
    single = norm(x[:1])   # training, one utterance: running statistics instead of an error
    running = (x[:1] - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)
    assert torch.allclose(single, running, atol=1e-6)
    assert not list(norm.parameters())   # no affine scale or shift


def test_head_learning_rate_is_scaled_and_the_upstream_follows_the_schedule(tmp_path):
    from sprune.training import TrainConfig, Trainer
    torch.manual_seed(0)
    model = IntentClassifier(FakeUpstream(), 4, 2, IntentHeadConfig(lr_scale=4.0))
    data = [{"wavs": torch.randn(800), "intent": i % 2} for i in range(4)]

    def collate(items):
        return {"wavs": torch.stack([d["wavs"] for d in items]),
                "lengths": torch.full((len(items),), 800),
                "intent": torch.tensor([d["intent"] for d in items])}

    trainer = Trainer(model, data, collate, TrainConfig(epochs=1, batch_size=2, lr=1e-3,
                                                        warmup_ratio=0.0, eval_every=100,
                                                        save_every=100, seed=0), tmp_path,
                      show_progress=False)
    trainer.fit()
    upstream_ids = {id(p) for p in model.upstream.parameters()}
    seen = set()
    for group in trainer.optimizer.param_groups:
        ids = {id(p) for p in group["params"]}
        expected_scale = 1.0 if ids <= upstream_ids else 4.0
        assert not (ids & upstream_ids and ids - upstream_ids)   # no mixed group
        assert group["lr"] == pytest.approx(expected_scale * trainer.lr_at(trainer.step - 1))
        seen |= ids
    assert seen == {id(p) for p in model.parameters()}   # every parameter is trained


@pytest.mark.parametrize("key,value", [("input_norm", "layer"), ("lr_scale", 0.0),
                                       ("pooling", "max")])
def test_bad_head_settings_are_user_errors(key, value):
    with pytest.raises(UserError, match=f"head.{key}") as error:
        IntentHeadConfig(**{key: value})
    if key == "pooling":
        assert "'max'" in str(error.value) and "mean, stats" in str(error.value)
