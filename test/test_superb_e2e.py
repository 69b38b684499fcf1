"""SUPERB IC end to end through s3prl's `SuperbIC` problem: a toy Fluent Speech Commands
corpus, a tiny random sprune upstream, the command `sprune superb command` prints (with the
smoke config egs/superb/prune1/conf/superb/tiny_IC.yaml: two CPU steps, then the test
stage), then `sprune superb finished` and `sprune superb collect` on what s3prl wrote.

Skipped unless s3prl's problem classes can import, i.e. the packages in
`sprune.superb.s3prl_tasks.EXTRA_PACKAGES` are installed.
"""
from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from sprune.superb.s3prl_tasks import EXTRA_PACKAGES
from sprune.upstream import UpstreamModel, save_upstream, tiny_config

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO_ROOT / "egs" / "superb" / "prune1" / "conf" / "superb" / "tiny_IC.yaml"
REFERENCES = REPO_ROOT / "egs" / "superb" / "prune1" / "conf" / "superb_reference.yaml"
# distribution name -> module name, where they differ
MODULE_NAMES = {"absl-py": "absl"}
# (action, object, location): three intents, as in FSC's train_data.csv columns
INTENTS = (("activate", "lights", "kitchen"), ("deactivate", "music", "none"),
           ("increase", "heat", "bedroom"))
PER_INTENT = {"train": 4, "valid": 2, "test": 2}

def missing_packages() -> list[str]:
    names = ["s3prl", *EXTRA_PACKAGES]
    return [n for n in names if importlib.util.find_spec(MODULE_NAMES.get(n, n)) is None]


def write_fluent_speech_commands(root):
    """FSC's layout as s3prl's `FluentSpeechCommands` reads it: data/{train,valid,test}
    _data.csv (index, path relative to root, speakerId, transcription, action, object,
    location) and 16 kHz mono wavs under wavs/speakers/<speaker>/."""
    rng = np.random.default_rng(0)
    for split, count in PER_INTENT.items():
        lines = [",path,speakerId,transcription,action,object,location"]
        for c, (action, obj, location) in enumerate(INTENTS):
            for i in range(count):
                speaker = f"spk{i % 2}"
                rel = f"wavs/speakers/{speaker}/{split}-{c}-{i}.wav"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                t = np.arange(int(16000 * (0.5 + 0.1 * i))) / 16000
                wav = 0.3 * np.sin(2 * np.pi * (200 + 150 * c) * t)
                wav = wav + 0.01 * rng.standard_normal(t.size)
                soundfile.write(root / rel, wav.astype(np.float32), 16000, subtype="PCM_16")
                lines.append(f"{len(lines) - 1},{rel},{speaker},{action} {obj} {location},"
                             f"{action},{obj},{location}")
        (root / "data").mkdir(exist_ok=True)
        (root / "data" / f"{split}_data.csv").write_text("\n".join(lines) + "\n")
    return root


def test_superb_ic_runs_through_s3prl_and_is_collected(tmp_path, cli, sprune_on_path):
    missing = missing_packages()
    if missing:
        pytest.skip(f"s3prl's problem classes need {', '.join(missing)} (pip install "
                    f"{' '.join(EXTRA_PACKAGES)})")
    root = write_fluent_speech_commands(tmp_path / "fluent_speech_commands_dataset")
    torch.manual_seed(0)
    upstream = tmp_path / "upstream"
    save_upstream(UpstreamModel(tiny_config("wav2vec2")), upstream)
    out = tmp_path / "superb" / "tiny" / "IC"

    printed = cli("superb", "command", "--task", "IC", "--upstream", upstream, "--root", root,
                  "--out", out, "--config", TINY_CONFIG)
    assert printed.returncode == 0, printed.stderr
    words = shlex.split(printed.stdout)
    assert words[:5] == ["python", "-m", "sprune.upstream.s3prl_bridge", "s3prl.main",
                         "SuperbIC"]
    # this venv's python; s3prl's data cache in tmp_path instead of ~/.cache/s3prl/data
    words = [sys.executable, *words[1:], "--cache_dir", str(tmp_path / "cache")]
    # (s3prl's FSC reader needs pandas' old Series.iteritems: the bridge puts it back)
    run = subprocess.run(words, cwd=tmp_path, env=sprune_on_path, capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]

    result = out / "evaluate" / "valid_best" / "test" / "result.yaml"
    logged = yaml.safe_load(result.read_text())
    assert 0.0 <= logged["accuracy"] <= 1.0 and np.isfinite(logged["loss"])
    assert (out / "train" / "valid_best").is_dir()   # the checkpoint the test stage used

    finished = cli("superb", "finished", "--task", "IC", "--out", out)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert f"IC finished: IC {100 * logged['accuracy']:.2f}" in finished.stdout

    collected = cli("superb", "collect", "--row", f"tiny={tmp_path / 'superb' / 'tiny'}",
                    "--params", f"tiny={upstream}", "--references", REFERENCES,
                    "--out", tmp_path / "table")
    assert collected.returncode == 0, collected.stderr
    table = (tmp_path / "table" / "RESULTS.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| tiny |"))
    assert f"{100 * logged['accuracy']:.2f}" in row and row.rstrip().endswith("| IC |")
    csv = (tmp_path / "table" / "results.csv").read_text().splitlines()
    assert csv[0].startswith("upstream,params,IC") and csv[1].startswith("tiny,")
