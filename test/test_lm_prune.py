"""LM pruning (paper 002): units as mask-engine units, masked == shrunk, SVD factorization,
rank pruning order and monotonicity, the pruning runs (every method x schedule, resume) and
the CLI's one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sprune.errors import UserError
from sprune.lm.config import LMConfig
from sprune.lm.layers import LowRankLinear
from sprune.lm.lowrank import factorize, initial_rank
from sprune.lm.model import TransformerLM
from sprune.lm.prune import LMPruneConfig, Selector, make_schedule, prune_lm
from sprune.lm.shrink import shrink
from sprune.lm.structure import UnitMap
from sprune.lm.train import LMData, LMTrainConfig, sized_config, train_lm
from sprune.lm.vocab import LMVocab
from sprune.prune.apply import zero_pruned
from sprune.prune.criteria import Magnitude
from sprune.prune.schedule import Incremental
from sprune.training import TrainConfig

REPO = Path(__file__).resolve().parents[1]
SENTENCES = [
    "in the beginning god created the heaven and the earth",
    "and the earth was without form and void",
    "and darkness was upon the face of the deep",
    "and god said let there be light and there was light",
    "and god saw the light that it was good",
    "and god divided the light from the darkness",
    "and god called the light day and the darkness he called night",
    "and the evening and the morning were the first day",
]


def tiny_lm(layers: int = 3, seed: int = 0, dropout: float = 0.0, **sizes) -> TransformerLM:
    torch.manual_seed(seed)
    config = LMConfig(vocab_size=30, embed_dim=8, d_model=16, heads=4, ffn_dim=24,
                      layers=layers, dropout=dropout, attention_dropout=dropout, **sizes)
    return TransformerLM(config).eval()


def masked_copy(model: TransformerLM, mask) -> TransformerLM:
    copy = TransformerLM(model.config)
    copy.load_state_dict(model.state_dict())
    zero_pruned(copy, mask)
    return copy.eval()


TOKENS = torch.randint(0, 29, (3, 11), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("kinds", [["heads"], ["ffn"], ["heads", "ffn"], ["blocks"], ["rank"]])
@pytest.mark.parametrize("sparsity", [0.25, 0.6, 0.95])
def test_masked_equals_shrunk(kinds, sparsity, one_torch_thread):
    model = tiny_lm()
    if kinds == ["rank"]:
        model = factorize(model, "full")
    units = UnitMap(model, kinds)
    scores = Magnitude().scores(model, units.scored_parameters)
    mask = units.expand(units.select(scores, sparsity))
    masked, small = masked_copy(model, mask), shrink(model, mask).eval()
    with torch.no_grad():
        assert torch.allclose(masked.logits(TOKENS), small.logits(TOKENS), atol=1e-5)
    assert small.num_parameters() < model.num_parameters() or sparsity < 0.3
    # the cache path of the shrunk model gives the same next-token log-probs
    cache = small.init_cache(3)
    with torch.no_grad():
        for t in range(TOKENS.shape[1]):
            logp, cache = small.step(TOKENS[:, t:t + 1], cache)
        expected = masked.logits(TOKENS)[:, -1].log_softmax(-1)
    assert torch.allclose(logp, expected, atol=1e-5)


def test_collapse_drops_emptied_sublayers():
    model = tiny_lm(layers=2)
    units = UnitMap(model, ["heads", "ffn"])
    keep = units.all_kept()
    keep["layers.1.attention.heads"][:] = False
    keep["layers.0.ffn.units"][:] = False
    keep["layers.0.ffn.units"][3] = True
    mask = units.expand(keep)
    assert not mask["layers.1.attention.out.bias"].any()       # collapse: bias and norm go too
    assert not mask["layers.1.attention_norm.weight"].any()
    assert mask["layers.0.ffn.down.bias"].all()                # one unit left: no collapse
    small = shrink(model, mask)
    assert small.config.layer_heads == [4, 0] and small.config.layer_ffn == [1, 24]
    assert small.layers[1].attention is None
    with torch.no_grad():
        assert torch.allclose(masked_copy(model, mask).logits(TOKENS), small.logits(TOKENS),
                              atol=1e-5)


def test_rank_zero_ffn_is_folded_into_the_attention_bias():
    model = factorize(tiny_lm(layers=2, dropout=0.1), "full").train()   # dropout must not leak in
    units = UnitMap(model, ["rank"])
    keep = units.all_kept()
    keep["layers.0.ffn.up.rank"][:] = False          # block 0's FFN now outputs a constant
    keep["layers.1.attention.q.rank"][3:] = False
    mask = units.expand(keep)
    small = shrink(model, mask).eval()
    model.eval()
    assert small.config.layer_ffn == [0, 24] and small.layers[0].ffn is None
    assert "layers.0.ffn.up" not in small.config.ranks
    with torch.no_grad():
        assert torch.allclose(masked_copy(model, mask).logits(TOKENS), small.logits(TOKENS),
                              atol=1e-5)


def test_stacked_qkv_decoding_equals_the_separate_projections():
    """Without autograd the dense q, k, v run as one cached product; it must give the same
    outputs, and see weights changed in place (HardMask, training) at the next call."""
    model = tiny_lm(layers=2)
    attention = model.layers[0].attention
    with torch.enable_grad():
        reference = model.logits(TOKENS)
    with torch.no_grad():
        assert torch.allclose(model.logits(TOKENS), reference, atol=1e-6)
        assert attention._stacked is not None
        attention.k.weight.mul_(0.5)
        fused = model.logits(TOKENS)
    with torch.enable_grad():
        assert torch.allclose(fused, model.logits(TOKENS), atol=1e-6)
    assert not torch.allclose(fused, reference, atol=1e-4)


def test_head_unit_owns_rows_and_columns_by_hand():
    """Head 2 of block 0 (head size 4): rows 8..11 of q, k, v (and biases), columns 8..11
    of the output projection -- and nothing else."""
    model = tiny_lm(layers=1)
    units = UnitMap(model, ["heads"])
    keep = units.all_kept()
    keep["layers.0.attention.heads"][2] = False
    mask = units.expand(keep)
    for p in "qkv":
        pruned = ~mask[f"layers.0.attention.{p}.weight"]
        assert pruned[8:12].all() and pruned.sum() == 4 * 16
        assert (~mask[f"layers.0.attention.{p}.bias"]).nonzero().flatten().tolist() == [8, 9, 10, 11]
    out = ~mask["layers.0.attention.out.weight"]
    assert out[:, 8:12].all() and out.sum() == 16 * 4
    assert mask["layers.0.attention.out.bias"].all()


def test_full_rank_svd_reproduces_the_layer():
    torch.manual_seed(0)
    linear = torch.nn.Linear(12, 7)
    for rank in (7, 4):
        factored = LowRankLinear.from_linear(linear, rank)
        x = torch.randn(5, 12)
        if rank == 7:
            assert torch.allclose(factored(x), linear(x), atol=1e-5)
        else:   # truncated: the best rank-4 approximation (Eckart-Young): error = tail singular values
            tail = torch.linalg.svdvals(linear.weight.detach())[4:]
            product = factored.second.weight @ factored.first.weight
            error = torch.linalg.matrix_norm(product - linear.weight.detach())
            assert torch.isclose(error, tail.norm(), atol=1e-5)
    model = tiny_lm()
    full = factorize(model, "full")
    with torch.no_grad():
        assert torch.allclose(full.logits(TOKENS), model.logits(TOKENS), atol=1e-5)
    assert initial_rank("neutral", torch.nn.Linear(16, 24)) == 16 * 24 // 40
    with pytest.raises(UserError, match="initial_rank"):
        initial_rank("half", torch.nn.Linear(16, 24))


def test_rank_pruning_removes_smallest_units_first_and_is_monotone():
    """Magnitude scores of balanced SVD factors follow the singular values: with a hand-made
    layer of known singular values the lowest components go first, and a cubic schedule
    never brings a pruned component back."""
    model = tiny_lm(layers=1)
    q = model.layers[0].attention.q
    with torch.no_grad():   # q = A diag(s) B^T with orthonormal A, B and decreasing s
        a, _ = torch.linalg.qr(torch.randn(16, 16))
        b, _ = torch.linalg.qr(torch.randn(16, 16))
        s = torch.linspace(4.0, 0.25, 16)
        q.weight.copy_(a @ torch.diag(s) @ b.T)
    factored = factorize(model, "full", include=["attention.q"])
    units = UnitMap(factored, ["rank"])
    assert [g.name for g in units.groups] == ["layers.0.attention.q.rank"]
    scores = Magnitude().scores(factored, units.scored_parameters)
    row_means = units.virtual_scores(scores)["layers.0.attention.q.rank"].mean(dim=1)
    schedule = Incremental(0.0, 0.75, start=0, steps=6, every=1, power=3)
    previous, kept_history = None, []
    for step in schedule.prune_steps():
        keep = units.select(scores, schedule.sparsity_at(step), previous)
        kept = keep["layers.0.attention.q.rank"]
        pruned = (~kept).nonzero().flatten().tolist()
        # the pruned components are exactly the lowest-scored ones
        assert sorted(pruned) == sorted(row_means.argsort()[:len(pruned)].tolist())
        if previous is not None:
            assert not (kept & ~previous["layers.0.attention.q.rank"]).any()
        kept_history.append(int(kept.sum()))
        previous = keep
    assert kept_history == sorted(kept_history, reverse=True) and kept_history[-1] == 4
    # the lowest magnitude units are the smallest singular values (the last components)
    assert set(pruned) == set(range(4, 16))


def test_schedule_shapes():
    config = LMPruneConfig(schedule="cubic", sparsity=0.5, prune_every=10, ramp_fraction=0.5)
    schedule = make_schedule(config, 0.5, 200)
    assert isinstance(schedule, Incremental) and schedule.end == 100 and schedule.power == 3
    assert schedule.sparsity_at(0) == 0.0 and schedule.sparsity_at(100) == 0.5
    values = [schedule.sparsity_at(t) for t in range(0, 101, 10)]
    assert values == sorted(values)
    assert make_schedule(LMPruneConfig(schedule="one-shot", sparsity=0.5), 0.5, 200).sparsity_at(0) == 0.5


def test_target_size_errors_and_conversion():
    model = tiny_lm()
    selector = Selector(model, LMPruneConfig(method="unstructured", target_params=1))
    total = model.num_parameters()
    with pytest.raises(UserError, match="not below the LM's size"):
        selector.sparsity_for(total)
    with pytest.raises(UserError, match="cannot remove"):
        selector.sparsity_for(total - selector.scope_size)
    sparsity = selector.sparsity_for(total - selector.scope_size // 2)
    assert abs(sparsity - 0.5) < 1e-6
    bad_configs = [
        {"method": "magic", "sparsity": 0.5},
        {"schedule": "exponential", "sparsity": 0.5},
        {"criterion": "oracle", "sparsity": 0.5},
        {"sparsity": 0.5, "target_params": 10},          # both targets
        {"method": "lowrank", "granularity": "8x1", "sparsity": 0.5},
    ]
    for bad in bad_configs:
        with pytest.raises(UserError):
            LMPruneConfig(**bad).check()

def test_sized_config_baselines():
    base = LMConfig(vocab_size=500, embed_dim=32, d_model=64, heads=4, ffn_dim=256, layers=2)
    with torch.device("meta"):
        full = TransformerLM(base).num_parameters()
    config = sized_config(base, full // 2)
    with torch.device("meta"):
        size = TransformerLM(config).num_parameters()
    assert size <= full // 2 and config.layers == 2 and config.embed_dim == 32
    assert config.d_model % 4 == 0 and config.ffn_dim == round(256 * config.d_model / 64)
    with pytest.raises(UserError, match="below the smallest LM"):
        sized_config(base, 1000)


@pytest.fixture(scope="module")
def lm_setup(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("lm")
    lines = SENTENCES * 6
    vocab = LMVocab.train(lines, 60)
    vocab.save(root / "bpe.model")
    data = LMData(vocab, lines, SENTENCES[:3], max_len=32)
    config = LMTrainConfig(model=LMConfig(embed_dim=16, d_model=16, heads=4, ffn_dim=32,
                                          layers=2, dropout=0.0, attention_dropout=0.0),
                           train=TrainConfig(max_steps=12, batch_size=8, lr=3e-3, eval_every=6,
                                             save_every=6, metric="ppl", metric_mode="min"))
    outcome = train_lm(config, data, root / "dense", root / "bpe.model")
    return root, data, outcome


def finetune(steps: int = 12) -> TrainConfig:
    return TrainConfig(max_steps=steps, batch_size=8, lr=1e-3, eval_every=6, save_every=6,
                       metric="ppl", metric_mode="min")


@pytest.mark.parametrize("method", ["unstructured", "structured", "lowrank"])
@pytest.mark.parametrize("schedule", ["one-shot", "cubic"])
def test_prune_runs_reach_the_target(lm_setup, method, schedule):
    from sprune.lm.checkpoint import load_lm
    from sprune.prune.mask import Mask

    root, data, dense_outcome = lm_setup
    target = int(dense_outcome["params"] * 0.7)
    config = LMPruneConfig(method=method, criterion="taylor", schedule=schedule,
                           target_params=target, prune_every=2, ramp_fraction=0.5,
                           criterion_batches=2, train=finetune(),
                           snapshots=[int(dense_outcome["params"] * 0.85)])
    dense, _ = load_lm(root / "dense" / "final")
    out = root / f"{method}_{schedule}"
    outcome = prune_lm(dense.train(), config, data, out, root / "bpe.model")
    assert abs(outcome["params"] - target) / target < 0.03
    assert outcome["dev"]["ppl"] > 1
    mask = Mask.load(out / "mask")
    final, _ = load_lm(out / "final")
    for name, keep in mask.items():   # the saved model really has the mask's zeros
        assert not dict(final.named_parameters())[name][~keep].any()
    if method != "unstructured":
        small, _ = load_lm(out / "shrunk")
        assert small.num_parameters() == outcome["params"]
        with torch.no_grad():
            tokens = TOKENS.clamp(max=small.config.vocab_size - 1)
            assert torch.allclose(small.logits(tokens), final.logits(tokens), atol=1e-4)
    history = json.loads((out / "final" / "config.json").read_text())["info"]["history"]
    snapshot = out / "snapshots" / str(int(dense_outcome["params"] * 0.85))
    if schedule == "cubic":   # the ramp passes 85 % of the dense size on its way down
        exported, document = load_lm(snapshot)
        assert exported.num_parameters(nonzero=method == "unstructured") <= int(
            dense_outcome["params"] * 0.85) * 1.03
        assert 0 < document["info"]["step"] < config.train.max_steps
        assert len(history) > 1 and [h["params"] for h in history] == sorted(
            [h["params"] for h in history], reverse=True)
    else:
        assert len(history) == 1 and history[0]["step"] == 0
    # finished: a second call reuses the outcome
    assert prune_lm(dense.train(), config, data, out, root / "bpe.model") == outcome


def test_killed_incremental_run_resumes_to_the_same_result(lm_setup, monkeypatch):
    from sprune.lm.checkpoint import load_lm
    from sprune.training import Trainer

    root, data, _ = lm_setup
    config = LMPruneConfig(method="structured", criterion="taylor", schedule="cubic",
                           sparsity=0.5, prune_every=2, ramp_fraction=0.75,
                           criterion_batches=2, train=finetune())
    dense, _ = load_lm(root / "dense" / "final")
    whole = prune_lm(dense.train(), config, data, root / "whole", root / "bpe.model")

    original = Trainer.save_checkpoint

    def crash_after_first_checkpoint(self):
        original(self)
        if self.step == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save_checkpoint", crash_after_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        prune_lm(load_lm(root / "dense" / "final")[0].train(), config, data, root / "killed",
                 root / "bpe.model")
    monkeypatch.setattr(Trainer, "save_checkpoint", original)
    resumed = prune_lm(load_lm(root / "dense" / "final")[0].train(), config, data,
                       root / "killed", root / "bpe.model")
    assert resumed["params"] == whole["params"]
    assert resumed["dev"]["ppl"] == pytest.approx(whole["dev"]["ppl"], rel=1e-6)


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sprune", "lm", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_cli_train_prune_shrink_and_errors(lm_setup, tmp_path):
    root, _, dense_outcome = lm_setup
    text = tmp_path / "text"
    text.mkdir()
    (text / "train.txt").write_text("\n".join(SENTENCES * 4) + "\n")
    (text / "dev.txt").write_text("\n".join(SENTENCES[:2]) + "\n")
    prune_yaml = tmp_path / "prune.yaml"
    prune_yaml.write_text(f"base: {REPO / 'conf/lm/prune.yaml'}\n"
                          "train: {max_steps: 4, batch_size: 8, eval_every: 4, save_every: 4}\n"
                          "criterion_batches: 1\n")
    dense = root / "dense" / "final"
    ok = run_cli("prune", "--config", str(prune_yaml), "--lm", str(dense), "--text", str(text),
                 "--method", "structured", "--sparsity", "0.5", "--out", str(tmp_path / "run"),
                 cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    shrunk = run_cli("shrink", str(tmp_path / "run"), "--out", str(tmp_path / "small"), cwd=tmp_path)
    assert shrunk.returncode == 0, shrunk.stderr
    assert (tmp_path / "small" / "config.json").is_file()
    # one-line errors, exit 2, nothing written
    cases = {
        "method": ["--method", "magic", "--sparsity", "0.5"],
        "schedule": ["--schedule", "exponential", "--sparsity", "0.5"],
        "criterion": ["--criterion", "oracle", "--sparsity", "0.5"],
        "above": ["--target-params", str(10 ** 9)],
        "below": ["--target-params", "10"],
    }
    for name, extra in cases.items():
        result = run_cli("prune", "--config", str(prune_yaml), "--lm", str(dense), "--text",
                         str(text), "--out", str(tmp_path / f"bad_{name}"), *extra, cwd=tmp_path)
        assert result.returncode == 2, (name, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, (name, result.stderr)
        assert not (tmp_path / f"bad_{name}" / "outcome.json").exists()
    # an acoustic run folder where an LM is expected
    acoustic = tmp_path / "acoustic"
    acoustic.mkdir()
    (acoustic / "experiment.json").write_text("{}")
    result = run_cli("prune", "--config", str(prune_yaml), "--lm", str(acoustic), "--text",
                     str(text), "--sparsity", "0.5", "--out", str(tmp_path / "bad_acoustic"),
                     cwd=tmp_path)
    assert result.returncode == 2 and "acoustic run folder" in result.stderr
    # an unstructured mask leaves nothing to shrink
    un = run_cli("prune", "--config", str(prune_yaml), "--lm", str(dense), "--text", str(text),
                 "--sparsity", "0.5", "--out", str(tmp_path / "un"), cwd=tmp_path)
    assert un.returncode == 0, un.stderr
    result = run_cli("shrink", str(tmp_path / "un"), "--out", str(tmp_path / "un_small"),
                     cwd=tmp_path)
    assert result.returncode == 2 and "nothing to shrink" in result.stderr
    assert not (tmp_path / "un_small").exists()


def test_lm_folder_refused_as_upstream(lm_setup):
    from sprune.upstream import load_upstream

    root, _, _ = lm_setup
    with pytest.raises(UserError, match="language model, not a speech upstream"):
        load_upstream(str(root / "dense" / "final"))
