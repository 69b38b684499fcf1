"""Run-creating commands check every input before they write: a bad one is a one-line error
(exit 2, no traceback) and leaves no run folder behind (an existing folder keeps what it had).

Commands run in-process (`sprune.cli.main`, the `cli` fixture)."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from sprune.checkpoint import save_state
from sprune.upstream import UpstreamModel, save_upstream, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Two tiny upstreams of different widths, intent data dirs, a fast fine-tuning config,
    and a run of the wide upstream that holds a mask (`sprune prune --no-retrain`)."""
    from conftest import build_data_dir
    from sprune.cli import main

    root = tmp_path_factory.mktemp("half_made")
    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), root / "small")
    save_upstream(UpstreamModel(tiny_config("wav2vec2", embed_dim=48)), root / "wide")
    for name in ("train", "dev"):
        build_data_dir(root, n_utts=4, langs=("en-US", "fr-FR"), name=name, seconds=0.3)
    (root / "ft.yaml").write_text(
        f"upstream: {root / 'small'}\nhead: {{hidden_dim: 16, embed_dim: 8}}\n"
        "train: {max_steps: 2, batch_size: 2, lr: 1.0e-3, eval_every: 2, save_every: 2, "
        "device: cpu}\n")
    code = main([str(a) for a in prune_args(root, root / "wide_mpi", "mpi", "--sparsity", "0.5",
                                            "--upstream", root / "wide", "--no-retrain")])
    assert code == 0 and (root / "wide_mpi" / "mask").is_dir()
    # a "finished" run whose weights belong to another model
    foreign = root / "foreign"
    save_state(foreign / "final", {"model": {"not.a.parameter": torch.zeros(3)}})
    (foreign / "outcome.json").write_text(json.dumps({"passes": 1.0}))
    return root


def prune_args(root, out, method, *extra):
    return ["prune", "--config", root / "ft.yaml", "--method", method, "--train", root / "train",
            "--dev", root / "dev", "--out", out, *extra]


def one_line_error(done, command: str) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sprune {command}: error: "), done.stderr
    return lines[0]


def test_prune_mask_from_another_model_leaves_no_run_folder(workspace, cli):
    out = workspace / "exp" / "transfer"
    err = one_line_error(cli(*prune_args(workspace, out, "mpi", "--sparsity", "0.5",
                                         "--mask-from", workspace / "wide_mpi")), "prune")
    assert "another model" in err
    assert not out.exists()


def test_prune_bad_input_keeps_an_existing_folder_as_it_was(workspace, cli):
    empty = workspace / "exp" / "made_before"
    empty.mkdir(parents=True)
    one_line_error(cli(*prune_args(workspace, empty, "mpi", "--sparsity", "0.5",
                                   "--mask-from", workspace / "wide_mpi")), "prune")
    assert list(empty.iterdir()) == []
    # --restart deletes the folder only once the inputs are known to be good
    kept = workspace / "exp" / "kept"
    kept.mkdir(parents=True)
    (kept / "marker").write_text("earlier run\n")
    one_line_error(cli(*prune_args(workspace, kept, "mpi", "--sparsity", "0.5", "--restart",
                                   "--mask-from", workspace / "wide_mpi")), "prune")
    assert [p.name for p in kept.iterdir()] == ["marker"]


@pytest.mark.parametrize("case, message", [
    ("init_from", "weights do not fit this model"),
    ("omp_no_dense", "OMP needs a finished dense fine-tuning run"),
    ("omp_foreign_dense", "weights do not fit this model"),
    ("scope", "matches no parameter of the model"),
    ("parp_reprune", "reprune_every must be >= 1"),
    ("mask_sparsity", "has sparsity 0.5"),
    ("device", "no GPU is visible"),
])
def test_prune_other_bad_inputs_leave_no_run_folder(workspace, cli, tmp_path, monkeypatch,
                                                    case, message):
    out = tmp_path / "run"
    extra: list = []
    method = "mpi"
    if case == "init_from":
        extra = ["--init-from", workspace / "foreign"]
    elif case == "omp_no_dense":
        method = "omp"
    elif case == "omp_foreign_dense":
        method, extra = "omp", ["--dense", workspace / "foreign"]
    elif case == "scope":
        (tmp_path / "p.yaml").write_text("method: mpi\ninclude: ['upstream.nowhere.*']\n")
        method = tmp_path / "p.yaml"
    elif case == "parp_reprune":
        (tmp_path / "p.yaml").write_text("method: parp\nreprune_every: 0\n")
        method = tmp_path / "p.yaml"
    elif case == "mask_sparsity":   # a mask of this model, at another sparsity
        done = cli(*prune_args(workspace, tmp_path / "small_mpi", "mpi", "--sparsity", "0.5",
                               "--no-retrain"))
        assert done.returncode == 0, done.stderr
        extra = ["--sparsity", "0.3", "--mask-from", tmp_path / "small_mpi"]
    elif case == "device":
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        extra = ["--set", "train.device=cuda"]
    err = one_line_error(cli(*prune_args(workspace, out, method, *extra)), "prune")
    assert message in err
    assert not out.exists()


def test_l0prune_bad_device_leaves_no_run_folder(workspace, cli, monkeypatch):
    """A GPU config on a machine without one fails when the Trainer is built: before any
    file of the run is written."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    conf = workspace / "l0.yaml"
    conf.write_text(yaml.safe_dump({
        "upstream": str(workspace / "small"), "max_seconds": 0.3,
        "structured": {"target_sparsity": 0.3},
        "train": {"max_steps": 2, "batch_size": 2, "device": "cuda"}}))
    out = workspace / "exp" / "l0"
    err = one_line_error(cli("l0prune", "--config", conf, "--train", workspace / "train",
                             "--out", out), "l0prune")
    assert "no GPU is visible" in err
    assert not out.exists()


def test_l0prune_restart_with_bad_input_deletes_nothing(workspace, cli, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    conf = workspace / "l0_restart.yaml"
    conf.write_text(yaml.safe_dump({
        "upstream": str(workspace / "small"), "structured": {"target_sparsity": 0.3},
        "train": {"max_steps": 2, "batch_size": 2, "device": "cuda"}}))
    kept = workspace / "exp" / "l0_kept"
    kept.mkdir(parents=True)
    (kept / "marker").write_text("earlier run\n")
    one_line_error(cli("l0prune", "--config", conf, "--train", workspace / "train", "--out", kept,
                       "--restart"), "l0prune")
    assert [p.name for p in kept.iterdir()] == ["marker"]


def test_pretrain_too_few_frames_for_k_leaves_no_run_folder(workspace, cli):
    """k-means needs at least k frames: found after the MFCCs, still before any write."""
    out = workspace / "exp" / "pretrain"
    args = ["pretrain", "--train", workspace / "train", "--dev", workspace / "dev", "--out", out,
            "--set", "model.conv_channels=16", "--set", "model.embed_dim=32",
            "--set", "model.num_layers=1", "--set", "model.ffn_dim=32",
            "--set", "model.pos_conv_kernel=8", "--set", "model.pos_conv_groups=4",
            "--set", "units.k=600", "--set", "units.max_frames=500",
            "--set", "train.max_steps=1", "--set", "train.batch_size=2"]
    err = one_line_error(cli(*args), "pretrain")
    assert "k-means needs at least k = 600 frames" in err
    assert not out.exists()


def test_lm_restart_with_bad_text_deletes_nothing(workspace, cli, tmp_path):
    """`sprune lm train --restart` (and `lm prune`, which shares the start) deletes --out
    only once the text has loaded."""
    kept = tmp_path / "lm_run"
    kept.mkdir()
    (kept / "marker").write_text("earlier run\n")
    (tmp_path / "lm.yaml").write_text("")
    bpe = tmp_path / "bpe.model"
    from sprune.lm.vocab import LMVocab

    LMVocab.train([f"the {w} sat on the mat by the door" for w in ("cat", "dog", "hen")] * 8,
                  30).save(bpe)
    err = one_line_error(cli("lm", "train", "--config", tmp_path / "lm.yaml", "--text",
                             tmp_path / "no_text", "--bpe", bpe, "--out", kept, "--restart"), "lm")
    assert "no such folder" in err
    assert [p.name for p in kept.iterdir()] == ["marker"]
