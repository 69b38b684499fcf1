"""The recipes' --seeds option: egs/mini_minds/ic1 (ic.sh) runs every cell once per training
seed into exp/<tag>/seed<N>/ and RESULTS.md shows mean ± std (a real run: tiny random
upstream, tiny data dirs, 2 updates per run, about 40 s on one core); asr.sh passes each
seed's train.seed and folder to sprune (a fake `sprune` notes its calls); bad seeds are one
line and exit 2; the mini ASR run.sh lists and passes the option."""
from __future__ import annotations

import csv
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHORT = ("--set train.max_steps=2 --set train.batch_size=4 --set train.log_every=1 "
         "--set train.eval_every=2 --set train.save_every=2 --set eval_batch_size=4 "
         "--set train.device=cpu")


def link_recipe(src: Path, dst: Path) -> Path:
    """A scratch copy of a recipe folder (every entry linked, so data/ and exp/ are written
    into the scratch folder), with utils/ and egs/TEMPLATE at the same depth."""
    dst.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name not in ("data", "exp"):
            (dst / entry.name).symlink_to(entry.resolve())
    root = dst.parents[2]
    if not (root / "utils").exists():
        (root / "utils").symlink_to(REPO / "utils")
    if not (root / "egs" / "TEMPLATE").exists():
        (root / "egs" / "TEMPLATE").symlink_to(REPO / "egs" / "TEMPLATE")
    return dst


def test_intent_recipe_with_two_seeds_reports_mean_and_spread(tmp_path, sprune_on_path):
    import torch

    from conftest import build_data_dir
    from sprune.upstream import UpstreamModel, save_upstream, tiny_config

    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), tmp_path / "upstream")
    recipe = link_recipe(REPO / "egs" / "mini_minds" / "ic1",
                         tmp_path / "egs" / "mini_minds" / "ic1")
    for name in ("train", "dev", "test"):   # stage 1 (speech synthesis) is not run
        build_data_dir(recipe / "data", n_utts=8, name=name, seconds=0.5)
    env = dict(sprune_on_path, SPRUNE_VENV=str(tmp_path / "no-venv"), OMP_NUM_THREADS="1")
    command = ["./run.sh", "--stage", "2", "--methods", "mpi parp", "--sparsities", "0.5",
               "--seeds", "1 2", "--upstream", tmp_path / "upstream", "--prune-opts", SHORT]
    done = subprocess.run(command, cwd=recipe, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exp = recipe / "exp" / "finetune"
    for seed in (1, 2):
        for run in ("dense", "mpi_s0.5", "parp_s0.5"):
            folder = exp / f"seed{seed}" / run
            assert (folder / "eval_test.json").is_file(), folder
            assert f'"seed": {seed},' in (folder / "experiment.json").read_text()
    text = (exp / "RESULTS.md").read_text()
    assert "over 2 seeds (1 2)" in text and "Chance: " in text
    assert "Mask IOU of PARP with MPI" in text
    rows = list(csv.DictReader((exp / "results.csv").open()))
    accuracy = [r for r in rows if r["quantity"] == "accuracy"]
    assert {r["method"] for r in accuracy} == {"dense", "mpi", "parp"}
    assert all(r["n"] == "2" and r["seeds"] == "1 2" for r in accuracy)
    assert [r["n"] for r in rows if r["quantity"] == "iou_mpi"] == ["2"]
    assert (exp / "accuracy_vs_sparsity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fidelity = (exp / "FIDELITY.md").read_text()   # stage 6: papers' claims on these runs
    assert "the final PARP mask is close to the MPI mask" in fidelity
    # a second run finds each seed's run finished: nothing is trained again
    again = subprocess.run(command[:1] + ["--stage", "2", "--stop-stage", "2"] + command[3:],
                           cwd=recipe, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("finished before") == 2, again.stdout


def fake_asr_recipe(tmp_path: Path) -> tuple[Path, dict]:
    """A scratch asr1 recipe whose `sprune` notes its arguments in tmp/calls."""
    recipe = tmp_path / "egs" / "x" / "asr1"
    (recipe / "conf").mkdir(parents=True)
    for name in ("asr.sh", "path.sh"):
        (recipe / name).symlink_to(REPO / "egs" / "TEMPLATE" / "asr1" / name)
    (recipe / "utils").symlink_to(REPO / "utils")
    for name in ("finetune.yaml", "prune_omp.yaml"):
        (recipe / "conf" / name).write_text("{}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sprune").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\n')
    (bin_dir / "sprune").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               SPRUNE_VENV=str(tmp_path / "no-venv"))
    return recipe, env


def test_asr_sh_runs_each_seed_into_its_folder(tmp_path):
    recipe, env = fake_asr_recipe(tmp_path)
    done = subprocess.run(["./asr.sh", "--stage", "3", "--stop-stage", "5", "--methods", "omp",
                           "--seeds", "1 2", "--nj", "2"], cwd=recipe, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    for seed in (1, 2):
        mine = [c for c in calls if f"exp/finetune/seed{seed}/" in c]
        assert len(mine) == 3, calls          # dense, the mask, the fine-tuning
        assert all(f"--set train.seed={seed}" in c for c in mine), mine
        assert all(f"--dense exp/finetune/seed{seed}/dense" in c for c in mine[1:]), mine
    # mask transfer takes seed N's masks from the source's seed<N>/ folder
    source = tmp_path / "source"
    (source / "seed1").mkdir(parents=True)
    (tmp_path / "calls").unlink()
    done = subprocess.run(["./asr.sh", "--stage", "5", "--stop-stage", "5", "--methods", "omp",
                           "--seeds", "1", "--mask-from", source, "--tag", "xfer"],
                          cwd=recipe, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"--mask-from {source}/seed1/omp_s0.5" in (tmp_path / "calls").read_text()


def stage_script_recipe(tmp_path, script):
    """A recipe folder for `script` (asr.sh: a fake one; ic.sh: the mini intent recipe) and
    the environment to run it in."""
    if script == "asr.sh":
        return fake_asr_recipe(tmp_path)
    recipe = link_recipe(REPO / "egs" / "mini_minds" / "ic1",
                         tmp_path / "egs" / "mini_minds" / "ic1")
    env = dict(os.environ, SPRUNE_VENV=str(tmp_path / "no-venv"),
               PATH=f"{REPO / 'tools' / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return recipe, env


@pytest.mark.parametrize("script", ["asr.sh", "ic.sh"])
def test_bad_seeds_are_one_line_and_exit_2(tmp_path, script):
    recipe, env = stage_script_recipe(tmp_path, script)
    done = subprocess.run([f"./{script}", "--stage", "3", "--methods", "omp", "--seeds",
                           "1 two"], cwd=recipe, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "--seeds takes whole numbers, got 'two'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    done = subprocess.run([f"./{script}", "--help"], cwd=recipe, env=env, capture_output=True,
                          text=True, timeout=60)
    assert "--seeds LIST" in done.stdout + done.stderr


def test_mini_asr_run_sh_lists_and_passes_seeds(tmp_path):
    recipe = link_recipe(REPO / "egs" / "mini_minds" / "asr1",
                         tmp_path / "egs" / "mini_minds" / "asr1")
    env = dict(os.environ, SPRUNE_VENV=str(tmp_path / "no-venv"),
               PATH=f"{REPO / 'tools' / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(["./run.sh", "--help"], cwd=recipe, env=env, capture_output=True,
                          text=True, timeout=60)
    assert "--seeds LIST" in done.stdout + done.stderr
    assert '--seeds "$seeds"' in (recipe / "run.sh").read_text()


@pytest.mark.parametrize("script", ["asr.sh", "ic.sh"])
def test_bad_nj_is_one_line_and_exit_2(tmp_path, script):
    recipe, env = stage_script_recipe(tmp_path, script)
    done = subprocess.run([f"./{script}", "--stage", "3", "--methods", "omp", "--nj", "0"],
                          cwd=recipe, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--nj must be a positive integer, got '0'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
