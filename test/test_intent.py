"""Intent task: AM-Softmax against a hand computation, pooling, dataset/collate, evaluation."""
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
from sprune.tasks.intent import IntentClassifier, evaluate_intents, masked_mean


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
    from sprune.tasks.intent import IntentHeadConfig
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


@pytest.mark.parametrize("key,value", [("input_norm", "layer"), ("lr_scale", 0.0)])
def test_bad_head_settings_are_user_errors(key, value):
    from sprune.tasks.intent import IntentHeadConfig
    with pytest.raises(UserError, match=f"head.{key}"):
        IntentHeadConfig(**{key: value})
