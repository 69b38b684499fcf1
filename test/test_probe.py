"""Frozen-upstream linear probes: the regression, pooled features, and `sprune probe`."""
from __future__ import annotations

import json

import pytest
import torch

from sprune import cli
from sprune.data.datadir import DataDir
from sprune.data.dataset import AudioDataset
from sprune.ssl.probe import (fit_logistic_regression, format_table, pooled_layer_features,
                              probe_layers, random_init_like)
from sprune.upstream import UpstreamModel, save_upstream, tiny_config


def test_logistic_regression_separates_separable_classes():
    gen = torch.Generator().manual_seed(0)
    means = 4.0 * torch.eye(3, 5)
    y = torch.arange(3).repeat(20)
    x = means[y] + 0.3 * torch.randn(60, 5, generator=gen)
    model = fit_logistic_regression(x, y, 3, l2=1e-3)
    assert float((model(x).argmax(-1) == y).float().mean()) == 1.0
    # A huge penalty shrinks the weights towards zero.
    heavy = fit_logistic_regression(x, y, 3, l2=100.0)
    assert heavy.weight.norm() < 0.1 * model.weight.norm()


def test_probe_layers_picks_the_informative_layer():
    gen = torch.Generator().manual_seed(1)
    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % 4
        noise = torch.randn(n, 3, 6, generator=gen)
        noise[:, 1, :4] += 3.0 * torch.eye(4)[y]  # only layer 1 knows the class
        return noise, y
    result = probe_layers(split(80), split(40), split(40), num_classes=4, max_iter=50)
    assert [r.layer for r in result.layers] == [0, 1, 2]
    assert result.best.layer == 1 and result.best.dev > 0.9 and result.best.test > 0.9
    assert result.last.layer == 2 and result.last.dev < 0.6


def test_pooled_features_keep_dataset_order(tmp_path, make_data_dir):
    path = make_data_dir(tmp_path, n_utts=5, seconds=(0.3, 0.2, 0.45))
    dataset = AudioDataset(DataDir.load(path))
    torch.manual_seed(0)
    # layer_norm extractor: padding does not change the valid frames, so batching is exact.
    model = UpstreamModel(tiny_config("hubert", extractor_mode="layer_norm",
                                      layer_norm_first=True))
    batched = pooled_layer_features(model, dataset, batch_size=3)
    single = pooled_layer_features(model, dataset, batch_size=1)
    assert batched.shape == (5, model.config.num_layers + 1, model.config.embed_dim)
    assert torch.allclose(batched, single, atol=1e-5)


def test_random_init_is_seeded_and_not_the_saved_weights():
    torch.manual_seed(123)
    trained = UpstreamModel(tiny_config("hubert"))
    a = random_init_like(trained.config, seed=0).state_dict()
    b = random_init_like(trained.config, seed=0).state_dict()
    c = random_init_like(trained.config, seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    name = "encoder.layers.0.attention.q_proj.weight"
    assert not torch.equal(a[name], c[name])
    assert not torch.equal(a[name], trained.state_dict()[name])


@pytest.fixture
def probe_data(tmp_path, make_data_dir):
    dirs = {name: make_data_dir(tmp_path, n_utts=n, seconds=(0.3, 0.4), name=name)
            for name, n in (("train", 10), ("dev", 5), ("test", 5))}
    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("hubert")), tmp_path / "up")
    return dirs, tmp_path / "up"


def test_probe_command_compares_pretrained_and_random(tmp_path, probe_data,
                                                      capsys):
    dirs, upstream = probe_data
    out = tmp_path / "probe"
    args = ["probe", "--upstream", str(upstream), "--random-init", str(upstream),
            "--train", str(dirs["train"]), "--dev", str(dirs["dev"]), "--test",
            str(dirs["test"]), "--out", str(out), "--max-iter", "20", "--l2", "0.01,0.1"]
    assert cli.main(args) == 0
    rows = json.loads((out / "probe.json").read_text())
    assert [row["init"] for row in rows] == ["pretrained", "random (seed 0)"]
    for row in rows:
        assert len(row["layers"]) == 3  # transformer input + 2 layers
        assert row["best_layer"]["dev"] == max(r["dev"] for r in row["layers"])
        assert all(0.0 <= r[k] <= 1.0 for r in row["layers"] for k in ("train", "dev", "test"))
        assert row["num_classes"] == 5 and row["l2_grid"] == [0.01, 0.1]
    table = (out / "probe.md").read_text()
    assert table.startswith("| upstream | init |") and "random (seed 0)" in table
    assert cli.main(args) == 0
    assert json.loads((out / "probe.json").read_text()) == rows


def test_format_table_lists_every_layer():
    row = {"upstream": "u", "init": "pretrained", "num_parameters": 1234, "num_classes": 2,
           "chance": 0.5, "l2_grid": [0.1],
           "layers": [{"layer": 0, "dev": 0.5, "test": None}, {"layer": 1, "dev": 0.75,
                                                              "test": None}],
           "best_layer": {"layer": 1, "dev": 0.75, "test": None},
           "last_layer": {"layer": 1, "dev": 0.75, "test": None}}
    table = format_table([row])
    assert "| u | pretrained | 1,234 | 1 | 75.0 | - | 75.0 | - |" in table
    assert "| 0 | 50.0 / - |" in table and "Chance: 50.0 %" in table


def test_probe_command_rejects_bad_input(tmp_path, probe_data, make_data_dir,
                                         capsys):
    dirs, upstream = probe_data
    base = ["probe", "--train", str(dirs["train"]), "--dev", str(dirs["dev"]),
            "--out", str(tmp_path / "p")]
    assert cli.main(base) == 2
    assert "nothing to probe" in capsys.readouterr().err
    assert cli.main(base + ["--upstream", str(upstream), "--l2", "big"]) == 2
    assert "--l2 'big'" in capsys.readouterr().err
    assert cli.main(base + ["--upstream", str(upstream), "--max-iter", "0"]) == 2
    assert "--max-iter" in capsys.readouterr().err
    assert cli.main(base + ["--upstream", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    no_intent = make_data_dir(tmp_path, n_utts=4, with_intent=False, name="plain")
    assert cli.main(["probe", "--upstream", str(upstream), "--train", str(no_intent),
                     "--dev", str(dirs["dev"]), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "utt2intent" in err
    assert not (tmp_path / "p").exists()
