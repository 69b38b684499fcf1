"""The structured-pruning recipes run as shell scripts: egs/superb/prune1 stages 1-4 (data,
prune, shrink, export) on a tiny fixture laid out like LibriSpeech, and both recipes' --help."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import torch

from sprune.upstream import UpstreamModel, save_upstream, tiny_config
from test_prep_librispeech import write_chapter

REPO = Path(__file__).resolve().parents[1]
PRUNE1 = REPO / "egs" / "superb" / "prune1"
SUPERB1 = REPO / "egs" / "mini_minds" / "superb1"


@pytest.mark.parametrize("recipe", [PRUNE1, SUPERB1])
def test_help_and_unknown_options(recipe, sprune_on_path):
    result = subprocess.run(["bash", "run.sh", "--help"], cwd=recipe, env=sprune_on_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--stage" in result.stdout + result.stderr
    result = subprocess.run(["bash", "run.sh", "--no-such-option", "1"], cwd=recipe,
                            env=sprune_on_path, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0


def test_prune1_data_prune_shrink_export_on_a_librispeech_fixture(tmp_path, sprune_on_path):
    tree = tmp_path / "corpus" / "LibriSpeech"
    for k, split in enumerate(("train-clean-100", "train-clean-360", "train-other-500",
                               "dev-clean")):
        write_chapter(tree / split, 100 + k, 10, 3)
    torch.manual_seed(0)
    save_upstream(UpstreamModel(tiny_config("wavlm")), tmp_path / "dense")
    recipe = tmp_path / "egs" / "superb" / "prune1"   # the usual depth: conf/'s base: resolve
    recipe.mkdir(parents=True)
    (tmp_path / "conf").symlink_to(REPO / "conf")
    for name in ("run.sh", "conf"):   # a copy, so data/ and exp/ land in tmp_path
        subprocess.run(["cp", "-r", PRUNE1 / name, recipe / name], check=True)
    for name in ("path.sh", "cmd.sh", "utils"):
        (recipe / name).symlink_to((PRUNE1 / name).resolve())
    opts = ("--set structured.teacher_layers=null --set train.max_steps=3 --set "
            "train.batch_size=2 --set train.device=cpu --set train.eval_every=3 --set "
            "structured.target_sparsity=0.3")
    command = ["bash", "run.sh", "--stop-stage", "4", "--librispeech-root", tmp_path / "corpus",
               "--upstream", tmp_path / "dense", "--prune-opts", opts, "--threads", "1"]
    result = subprocess.run(list(map(str, command)), cwd=recipe, env=sprune_on_path,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    train = (recipe / "data" / "train_960" / "wav.scp").read_text().splitlines()
    assert len(train) == 9 and (recipe / "data" / "dev_clean" / "text").is_file()
    # the default experiment name carries a hash of --prune-opts (other options: other folder)
    tag = "prune_l0_" + hashlib.md5((opts + "\n").encode()).hexdigest()[:6]
    exp = recipe / "exp" / tag
    masks = json.loads((exp / "prune" / "masks" / "masks.json").read_text())
    assert masks["steps"] == 3
    assert (exp / "shrunk" / "config.json").is_file()
    export = json.loads((exp / "s3prl" / "export.json").read_text())
    assert export["num_layers"] == 3 and export["downsample_rate"] == 320
    # Re-running skips the finished stages.
    again = subprocess.run(list(map(str, command)), cwd=recipe, env=sprune_on_path,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    for words in ("stage 1: data/train_960", "not training again", f"exp/{tag}/shrunk: up to date",
                  f"stage 4: exp/{tag}/s3prl is up to date"):
        assert words in again.stdout, words
