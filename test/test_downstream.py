"""`sprune downstream`: frozen-upstream intent and CTC heads for dense, masked and shrunk."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from sprune.structured.mask_store import save_masks
from sprune.structured.masked import MaskedUpstream
from sprune.structured.shrink_from_masks import shrink_masked
from sprune.structured.structures import Structures
from sprune.superb.frozen import WeightedLayerSum
from sprune.upstream import UpstreamModel, save_upstream, tiny_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_weighted_layer_sum_starts_as_the_mean_and_learns_weights():
    hidden = torch.randn(2, 5, 3, 4)               # [B, T, L + 1, D]
    featurizer = WeightedLayerSum(3)
    assert torch.allclose(featurizer(hidden), hidden.mean(dim=2), atol=1e-6)
    featurizer(hidden).sum().backward()
    assert featurizer.weights.grad is not None and featurizer.weights.grad.abs().sum() > 0


def test_dense_masked_and_shrunk_rows_and_the_same_check(tmp_path, make_data_dir, cli):
    torch.manual_seed(0)
    dense = UpstreamModel(tiny_config("hubert")).eval()
    save_upstream(dense, tmp_path / "dense")
    masked = MaskedUpstream(dense, Structures()).eval()
    with torch.no_grad():   # switch off half of layer 0's FFN units and one head's vo dims
        masked.gates.gate("layers.0.ffn_units").log_alpha[:32] = -10.0
        masked.gates.gate("layers.1.vo").log_alpha[2] = -10.0
    save_masks(masked, tmp_path / "run" / "masks", steps=5)
    save_upstream(shrink_masked(masked), tmp_path / "shrunk")
    splits = {name: make_data_dir(tmp_path, n_utts=5, seconds=(0.8, 1.0), name=name)
              for name in ("train", "dev", "test")}
    result = cli("downstream", "--upstream", f"dense={tmp_path / 'dense'}",
                 "--masked", f"masked={tmp_path / 'run'}",
                 "--upstream", f"shrunk={tmp_path / 'shrunk'}", "--same", "masked,shrunk",
                 *[a for s in ("train", "dev", "test") for a in (f"--{s}", splits[s])],
                 "--intent-epochs", "3", "--ctc-epochs", "2", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "out" / "downstream.json").read_text())
    rows = {row["name"]: row for row in document["rows"]}
    assert rows["dense"]["scope_sparsity"] is None
    assert rows["masked"]["num_parameters"] == rows["shrunk"]["num_parameters"] \
        < rows["dense"]["num_parameters"]
    assert rows["masked"]["scope_sparsity"] > 0
    for row in rows.values():
        assert 0.0 <= row["intent_test_acc"] <= 1.0 and row["ctc_test_cer"] >= 0.0
        assert len(row["intent_layer_weights"]) == 3 and len(row["ctc_layer_weights"]) == 3
    check = document["checks"][0]
    assert check["ok"] and check["max_hidden_difference"] <= 1e-4
    assert check["identical_metrics"]
    assert "check: masked vs shrunk" in result.stdout and "OK" in result.stdout
    with open(tmp_path / "out" / "downstream.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == ["dense", "masked", "shrunk"]
    assert "| masked |" in (tmp_path / "out" / "downstream.md").read_text()
    # Two different models are not "the same": the check fails and the command exits 1.
    result = cli("downstream", "--upstream", f"dense={tmp_path / 'dense'}",
                 "--upstream", f"shrunk={tmp_path / 'shrunk'}", "--same", "dense,shrunk",
                 "--tasks", "intent", "--intent-epochs", "1",
                 *[a for s in ("train", "dev", "test") for a in (f"--{s}", splits[s])],
                 "--out", tmp_path / "out2")
    assert result.returncode == 1 and "FAILED" in result.stdout


def test_bad_options_are_one_line_errors(tmp_path, make_data_dir, cli):
    data = make_data_dir(tmp_path, n_utts=2, name="d")
    common = ["--train", data, "--dev", data, "--test", data, "--out", tmp_path / "o"]
    for args, message in (([], "nothing to evaluate"),
                          (["--upstream", "dense"], "NAME=PATH"),
                          (["--upstream", "a=x", "--tasks", "kws"], "choose from"),
                          (["--upstream", "a=x", "--same", "a,b"], "name two rows"),
                          (["--masked", f"m={tmp_path}"], "has no trained masks")):
        result = cli("downstream", *args, *common)
        assert result.returncode == 2, args
        assert message in result.stderr and result.stderr.count("\n") == 1
