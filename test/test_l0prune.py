"""`sprune l0prune`: structured-pruning runs from a YAML, resume, shrink, and bad input."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from sprune.structured.mask_store import load_masks
from sprune.upstream import UpstreamModel, load_upstream, save_upstream, tiny_config


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def setup(tmp_path, make_data_dir):
    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), tmp_path / "up")
    train = make_data_dir(tmp_path, n_utts=4, seconds=(0.3, 0.5), name="train")
    dev = make_data_dir(tmp_path, n_utts=2, seconds=0.3, name="dev", with_intent=False)
    return tmp_path, train, dev


def write_config(path, upstream, **structured):
    config = {"upstream": str(upstream), "max_seconds": 0.4,
              "structured": {"target_sparsity": 0.3, **structured},
              "train": {"max_steps": 6, "batch_size": 2, "lr": 1e-3, "eval_every": 3,
                        "save_every": 3, "log_every": 1, "device": "cpu"}}
    path.write_text(yaml.safe_dump(config))
    return path


def one_line_error(result, command="l0prune"):
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"sprune {command}: error: ")
    return result.stderr


def test_trains_masks_writes_the_run_folder_and_shrinks(setup, cli):
    root, train, dev = setup
    conf = write_config(root / "l0.yaml", root / "up")
    result = cli("l0prune", "--config", conf, "--train", train, "--dev", dev,
                 "--out", root / "run", "--shrink", root / "shrunk", "--threads", "1")
    assert result.returncode == 0, result.stderr
    run = root / "run"
    for name in ("config.yaml", "data.json", "log.jsonl", "summary.json",
                 "masks/masks.json", "masks/masks.safetensors", "masks/upstream/config.json"):
        assert (run / name).is_file(), name
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["structured"]["structures"]["ffn_units"] is True
    assert resolved["freeze_feature_encoder"] is None
    document = json.loads((run / "masks" / "masks.json").read_text())
    assert document["steps"] == 6
    evals = [json.loads(line) for line in (run / "log.jsonl").open()]
    evals = [r for r in evals if r["event"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6]
    assert {"distill", "sparsity", "expected_sparsity"} <= set(evals[-1])
    assert "sparsity of the 0/1 masks" in result.stdout
    # The shrunk upstream loads and computes what the masked student computes.
    masked, _ = load_masks(run / "masks")
    shrunk, _ = load_upstream(str(root / "shrunk"))
    wavs, lengths = torch.randn(2, 4000), torch.tensor([4000, 3000])
    with torch.no_grad():
        expected = masked(wavs, lengths)
        got = shrunk(wavs, lengths)
    frames = expected.lengths
    for a, b in zip(got.hidden_states, expected.hidden_states):
        for row, n in enumerate(frames.tolist()):
            assert torch.allclose(a[row, :n], b[row, :n], atol=1e-4)
    # A finished run is not trained again.
    again = cli("l0prune", "--config", conf, "--train", train, "--out", run)
    assert again.returncode == 0 and "not training again" in again.stdout
    # ... but a finished run with another config is refused, not reused.
    other = cli("l0prune", "--config", conf, "--train", train, "--out", run,
                "--set", "structured.target_sparsity=0.25")
    assert other.returncode == 2 and "another config" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_killed_run_resumes_to_the_uninterrupted_result(setup, cli, monkeypatch):
    root, train, dev = setup
    conf = write_config(root / "l0.yaml", root / "up")
    assert cli("l0prune", "--config", conf, "--train", train, "--out", root / "full").returncode == 0

    from sprune.structured.task import SaveMasks

    def kill_at_step_4(self, trainer):
        if trainer.step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(SaveMasks, "on_step_end", kill_at_step_4, raising=False)
    killed = cli("l0prune", "--config", conf, "--train", train, "--out", root / "run")
    assert killed.returncode == 130 and not (root / "run" / "masks").exists()
    # Shrinking a run that has no trained masks yet is a one-line error.
    assert "has no trained masks" in one_line_error(
        cli("shrink", "--run", root / "run", "--out", root / "shrunk"), "shrink")
    monkeypatch.undo()
    # Another config for the same folder is refused; the same one resumes.
    other = write_config(root / "other.yaml", root / "up", target_sparsity=0.2)
    assert "another config" in one_line_error(
        cli("l0prune", "--config", other, "--train", train, "--out", root / "run"))
    resumed = cli("l0prune", "--config", conf, "--train", train, "--out", root / "run")
    assert resumed.returncode == 0, resumed.stderr
    records = [json.loads(line) for line in (root / "run" / "log.jsonl").open()]
    assert any(r["event"] == "resume" and r["step"] == 3 for r in records)
    full, _ = load_masks(root / "full" / "masks")
    run, _ = load_masks(root / "run" / "masks")
    for name, alpha in full.gates.log_alphas().items():
        assert torch.equal(run.gates.log_alphas()[name], alpha), name


def test_bad_input_is_one_line_and_exit_2(setup, cli):
    root, train, _ = setup
    up = root / "up"
    out = root / "run"
    # A target the chosen structures cannot reach names the largest reachable sparsity.
    conf = write_config(root / "a.yaml", up, target_sparsity=0.9, structures=["ffn_units"])
    err = one_line_error(cli("l0prune", "--config", conf, "--train", train, "--out", out))
    assert "largest reachable sparsity is 0.49" in err and "a.yaml: structured" in err
    # An unknown structure name lists the known ones.
    conf = write_config(root / "b.yaml", up, structures={"neurons": True})
    err = one_line_error(cli("l0prune", "--config", conf, "--train", train, "--out", out))
    assert "unknown structure 'neurons'" in err and "ffn_units" in err
    # Unknown keys, at the top and in structured:, and --set of an unknown key.
    conf = write_config(root / "c.yaml", up, sparsity=0.5)
    assert "unknown key 'sparsity'" in one_line_error(
        cli("l0prune", "--config", conf, "--train", train, "--out", out))
    conf = write_config(root / "d.yaml", up)
    assert "unknown key 'epoch'" in one_line_error(
        cli("l0prune", "--config", conf, "--set", "train.epoch=3", "--train", train,
            "--out", out))
    assert "max_steps: 0 must be >= 1" in one_line_error(
        cli("l0prune", "--config", conf, "--set", "train.max_steps=0", "--train", train,
            "--out", out))
    # conv channels of a frozen conv encoder cannot be gated.
    assert "frozen" in one_line_error(
        cli("l0prune", "--config", conf, "--set", "structured.structures.conv_channels=true",
            "--set", "freeze_feature_encoder=true", "--train", train, "--out", out))
    assert "does not exist" in one_line_error(
        cli("l0prune", "--config", conf, "--train", root / "nope", "--out", out))
    assert not (out / "masks").exists()


def test_gap_between_0_1_and_expected_sparsity_is_explained(tmp_path):
    """Undecided gates (every P(z != 0) = 0.7): the expected count multiplies the nested
    levels (block x dims), the 0/1 rule rounds each level, so the masks are less sparse."""
    from sprune.structured.mask_store import save_masks
    from sprune.structured.masked import MaskedUpstream
    from sprune.structured.run import gap_note, undecided_fraction
    from sprune.structured.structures import Structures

    torch.manual_seed(0)
    masked = MaskedUpstream(UpstreamModel(tiny_config()), Structures(), init_keep_prob=0.7)
    save_masks(masked.eval(), tmp_path / "masks", steps=1)
    report = json.loads((tmp_path / "masks" / "masks.json").read_text())["report"]
    assert report["expected_scope_sparsity"] - report["scope_sparsity"] > 0.2
    assert undecided_fraction(tmp_path / "masks") == 1.0
    note = gap_note(report, 1.0)
    assert "less sparse than expected" in note and "100 % of the gates are undecided" in note
    # Decided gates (P near 0 or 1) agree, and there is nothing to explain.
    with torch.no_grad():
        for i, alpha in enumerate(masked.gates.log_alphas().values()):
            alpha.fill_(10.0 if i % 3 else -10.0)
    save_masks(masked, tmp_path / "decided", steps=1)
    report = json.loads((tmp_path / "decided" / "masks.json").read_text())["report"]
    assert abs(report["scope_sparsity"] - report["expected_scope_sparsity"]) < 0.02
    assert undecided_fraction(tmp_path / "decided") == 0.0 and gap_note(report, 0.0) is None
