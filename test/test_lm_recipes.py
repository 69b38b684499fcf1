"""The LM pruning recipes (paper 002) and `sprune lm results`.

* egs/kjv/lm1/run.sh end to end at a tiny size (a fake `bible` reader on PATH, a tiny LM, a
  few updates, two sizes, one criterion and schedule): RESULTS.md, results.csv and the
  plots hold every run, test.txt is held out, and a re-run skips every finished stage.
* egs/librispeech/lm1/run.sh on a small .gz fixture given as a local path (no download):
  stages 1-4 with one pruning run.
* `sprune lm results` on hand-made outcome.json / eval JSON files: the three answers
  (incremental vs one-shot, Taylor vs magnitude, pruned vs scratch) computed as counted by
  hand, and a broken outcome.json is one line and exit 2.
"""
from __future__ import annotations

import csv
import gzip
import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from sprune.lm import report

REPO = Path(__file__).resolve().parents[1]
# A tiny LM (about 12k parameters with 60 BPE units) and short runs for the recipe tests.
TINY_LM = ("--set model.embed_dim=16 --set model.d_model=32 --set model.ffn_dim=64 "
           "--set model.layers=1 --set train.batch_size=8 --set train.eval_every=4 "
           "--set train.save_every=4 --set train.log_every=2 --set dev_lines=20")
TINY_PRUNE = ("--set criterion_batches=1 --set prune_every=2 --set train.batch_size=8 "
              "--set train.eval_every=4 --set train.save_every=2 --set dev_lines=20")
TINY_EVAL = "--latency-steps 2 --latency-repeats 1 --latency-context 4"
WORDS = ("and the lord said unto moses behold i will send thee a land of milk honey my "
         "people shall go forth into wilderness children israel king david son house god "
         "heaven earth light darkness day night water fire bread wine gold silver city "
         "gate wall sword peace war spirit word law prophet priest temple altar lamb sheep "
         "shepherd mountain river sea fish bird tree fruit seed field harvest").split()


def sentence(rng: random.Random, lo: int = 5, hi: int = 14) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def fake_bible(folder: Path, chapters: int = 30, verses: int = 12) -> Path:
    """A `bible` script printing `Ge<c>:<v> text` lines like Debian's reader; returns its
    folder (to put first on PATH)."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    lines = [f"Ge{c}:{v} {sentence(rng).capitalize()}." for c in range(1, chapters + 1)
             for v in range(1, verses + 1)]
    (folder / "verses.txt").write_text("\n".join(lines) + "\n")
    script = folder / "bible"
    script.write_text(f"#!/bin/sh\ncat '{folder / 'verses.txt'}'\n")
    script.chmod(0o755)
    return folder


def recipe_copy(tmp_path: Path, corpus: str) -> Path:
    """egs/<corpus>/lm1 as a scratch recipe at the same depth (links resolve as in the
    repository): every entry linked, so data/ and exp/ are written into the scratch folder."""
    dst = tmp_path / "egs" / corpus / "lm1"
    dst.mkdir(parents=True)
    for entry in (REPO / "egs" / corpus / "lm1").iterdir():
        if entry.name not in ("data", "exp"):
            (dst / entry.name).symlink_to(entry.resolve())
    (tmp_path / "utils").symlink_to(REPO / "utils")
    (tmp_path / "egs" / "TEMPLATE").symlink_to(REPO / "egs" / "TEMPLATE")
    return dst


def run(recipe: Path, env: dict, *args) -> subprocess.CompletedProcess:
    return subprocess.run(["./run.sh", *map(str, args)], cwd=recipe, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def env(sprune_on_path, tmp_path):
    path = f"{fake_bible(tmp_path / 'fakebin')}{os.pathsep}{sprune_on_path['PATH']}"
    return {**sprune_on_path, "PATH": path, "SPRUNE_VENV": str(tmp_path / "no-venv"),
            "OMP_NUM_THREADS": "1"}


def tiny_options(sizes: str) -> list[str]:
    return ["--bpe-size", "60", "--dense-steps", "8", "--finetune-steps", "6",
            "--sizes", sizes, "--train-opts", TINY_LM, "--prune-opts", TINY_PRUNE,
            "--eval-opts", TINY_EVAL, "--nj", "2"]


def test_kjv_recipe_end_to_end_then_skips_finished_stages(tmp_path, env):
    recipe = recipe_copy(tmp_path, "kjv")
    args = ["--tag", "tiny", "--text-opts", "--dev 0.1 --test 0.1", "--criteria", "taylor",
            "--schedules", "cubic", *tiny_options("9000 7000")]
    done = run(recipe, env, *args)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = recipe / "data" / "kjv"
    test = (data / "test.txt").read_text().splitlines()
    train = set((data / "train.txt").read_text().splitlines())
    assert test and len((data / "test.ids").read_text().splitlines()) == len(test)
    assert not train & set(test)                       # held out
    assert (recipe / "data" / "bpe60" / "bpe.model").is_file()
    exp = recipe / "exp" / "tiny"
    names = ["dense", "scratch_9k", "scratch_7k"] + [
        f"{m}_taylor_cubic_{s}" for m in ("unstructured", "structured", "lowrank")
        for s in ("9k", "7k")]
    for name in names:
        outcome = json.loads((exp / name / "outcome.json").read_text())
        if name.startswith("scratch"):
            assert outcome["kind"] == "scratch" and outcome["steps"] == 14   # 8 + 6 updates
        lm = exp / name / ("shrunk" if name.startswith(("structured", "lowrank")) else "final")
        assert (lm / "eval_test.json").is_file(), name
    results = (exp / "RESULTS.md").read_text()
    for name in names:
        assert f"| {name} |" in results, name
    for png in ("ppl_vs_params.png", "ppl_vs_flops.png", "ppl_vs_latency.png"):
        assert (exp / png).stat().st_size > 1000 and f"]({png})" in results
    assert "### 3. Pruned vs same-size models trained from scratch" in results
    assert "at **" in results.split("### 3.")[1]          # the scratch answer was computed
    with open(exp / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run"] for r in rows) == sorted(names)
    assert all(r["test_ppl"] and float(r["test_ppl"]) > 1 for r in rows)

    stamps = {n: (exp / n / "outcome.json").stat().st_mtime for n in names}
    again = run(recipe, env, *args)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    for words in ("stage 2: data/bpe60/bpe.model is newer", "stage 3: exp/tiny/dense finished "
                  "before", "stage 4: every run finished before", "stage 5: every LM has"):
        assert words in again.stdout, (words, again.stdout)
    assert {n: (exp / n / "outcome.json").stat().st_mtime for n in names} == stamps


def test_kjv_recipe_option_errors(tmp_path, env):
    recipe = recipe_copy(tmp_path, "kjv")
    help_run = run(recipe, env, "--help")
    assert help_run.returncode == 0 and "--finetune-steps N" in help_run.stdout
    for args, words in ((["--tag", "other"], "--dense-steps must be a positive integer"),
                        (["--sizes", "1e5"], "--sizes: '1e5' is not a number"),
                        (["--nj", "0"], "--nj must be a positive integer"),
                        (["--scratch", "maybe"], "true or false"),
                        (["--prune-config", "conf/nope.yaml"], "conf/nope.yaml not found"),
                        (["--colour", "red"], "unknown option '--colour'")):
        done = run(recipe, env, *args)
        assert done.returncode == 2 and words in done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1
    assert not (recipe / "data").exists()


def test_librispeech_recipe_on_a_local_gz_fixture(tmp_path, env):
    rng = random.Random(1)
    source = tmp_path / "my corpora" / "librispeech-lm-norm.txt.gz"   # a space in the path
    source.parent.mkdir()
    with gzip.open(source, "wt") as f:
        f.writelines(sentence(rng).upper() + "\n" for _ in range(400))
    recipe = recipe_copy(tmp_path, "librispeech")
    done = run(recipe, env, "--source", source, "--max-lines", "300", "--text-opts",
               "--dev 20 --test 20 --block-lines 10", "--stop-stage", "4", "--tag", "t",
               "--methods", "lowrank", "--criteria", "magnitude", "--schedules", "one-shot",
               "--scratch", "false", *tiny_options("9000"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = recipe / "data" / "librispeech"
    stats = json.loads((data / "stats.json").read_text())
    assert stats["options"]["max_lines"] == 300 and stats["options"]["source"] == str(source)
    assert all(15 <= stats[s]["lines"] <= 30 for s in ("dev", "test"))   # whole blocks of 10
    assert stats["train"]["lines"] <= 260
    assert (data / "train.txt").read_text().islower()            # normalised
    exp = recipe / "exp" / "t"
    assert json.loads((exp / "dense" / "outcome.json").read_text())["steps"] == 8
    pruned = json.loads((exp / "lowrank_magnitude_one-shot_9k" / "outcome.json").read_text())
    assert pruned["method"] == "lowrank" and pruned["params"] <= 9000 * 1.05
    assert (exp / "lowrank_magnitude_one-shot_9k" / "shrunk" / "config.json").is_file()
    assert not list(exp.glob("scratch_*")) and not (exp / "RESULTS.md").exists()
    help_run = run(recipe, env, "--help")
    assert help_run.returncode == 0 and "--max-lines N" in help_run.stdout


# --------------------------------------------------------------------- sprune lm results

def write_run(exp: Path, name: str, kind: str, test_ppl: float | None, dev_ppl: float,
              params: int, target: int | None = None, method: str | None = None,
              criterion: str | None = None, schedule: str | None = None,
              flops: float = 1e6, ms: float = 0.5) -> None:
    folder = exp / name
    folder.mkdir(parents=True)
    outcome = {"kind": kind, "params": params, "total_params": params,
               "flops_per_token": flops, "dev": {"ppl": dev_ppl}, "steps": 10}
    if kind != "dense":
        outcome["target_params"] = target
    if kind == "pruned":
        outcome.update(method=method, criterion=criterion, schedule=schedule,
                       scope_sparsity=0.5)
    (folder / "outcome.json").write_text(json.dumps(outcome))
    if test_ppl is None:
        return
    lm = folder / ("shrunk" if method in ("structured", "lowrank") else "final")
    lm.mkdir()
    (lm / "eval_test.json").write_text(json.dumps({
        "ppl": test_ppl, "parameters": {"nonzero": params, "total": params},
        "flops_per_token": flops, "flops_per_token_nonzero_theoretical": flops / 2,
        "latency": {"ms_per_token": ms}}))


def hand_made(exp: Path) -> None:
    """Test ppl chosen so that: incremental beats one-shot in 2 of 3 pairs (-1, -3, +1);
    taylor beats magnitude in 1 of 1 (-2); the best pruned run beats scratch at both sizes
    (100k: 56 vs 60, 3 of 5 pruned runs below 60; 50k: 69 vs 70, 1 of 2)."""
    write_run(exp, "dense", "dense", 50.0, 48.0, 200_000)
    write_run(exp, "scratch_100k", "scratch", 60.0, 59.0, 99_000, 100_000)
    write_run(exp, "scratch_50k", "scratch", 70.0, 69.0, 49_000, 50_000)
    for name, method, criterion, schedule, target, ppl in (
            ("um1", "unstructured", "magnitude", "one-shot", 100_000, 58.0),
            ("um2", "unstructured", "magnitude", "cubic", 100_000, 57.0),
            ("um3", "unstructured", "magnitude", "one-shot", 50_000, 72.0),
            ("um4", "unstructured", "magnitude", "cubic", 50_000, 69.0),
            ("sm1", "structured", "magnitude", "one-shot", 100_000, 61.0),
            ("sm2", "structured", "magnitude", "cubic", 100_000, 62.0),
            ("ut1", "unstructured", "taylor", "one-shot", 100_000, 56.0)):
        write_run(exp, name, "pruned", ppl, ppl - 1, target, target, method, criterion,
                  schedule)


def test_the_three_answers_on_hand_made_runs(tmp_path, cli):
    exp = tmp_path / "exp"
    hand_made(exp)
    runs = report.collect_lm_runs(exp)
    assert report.pick_split(runs) == "test"
    schedules = report.compare_schedules(runs, "test")
    assert sorted((p.key["method"], p.key["target"], p.difference) for p in schedules) == [
        ("structured", "100k", 1.0), ("unstructured", "100k", -1.0),
        ("unstructured", "50k", -3.0)]
    assert sum(p.other_wins for p in schedules) == 2
    criteria = report.compare_criteria(runs, "test")
    assert [(p.base.name, p.other.name, p.difference) for p in criteria] == [
        ("um1", "ut1", -2.0)]
    scratch = {r.target: r for r in report.compare_scratch(runs, "test")}
    assert scratch["100k"].best.name == "ut1" and scratch["100k"].pair.difference == -4.0
    assert (scratch["100k"].pruned_better, scratch["100k"].pruned_total) == (3, 5)
    assert scratch["50k"].best.name == "um4" and scratch["50k"].pair.difference == -1.0
    assert (scratch["50k"].pruned_better, scratch["50k"].pruned_total) == (1, 2)

    done = cli("lm", "results", exp, "--quiet")
    assert done.returncode == 0, done.stderr
    text = (exp / "RESULTS.md").read_text()
    q1, q2, q3 = (text.split(f"### {i}.")[1].split("###")[0] for i in (1, 2, 3))
    assert "cubic has the lower test ppl in **2 of 3** pairs" in q1
    assert "mean cubic - one-shot: -1.00 ppl" in q1 and "cubic is better than one-shot" in q1
    assert "taylor has the lower test ppl in **1 of 1** pairs" in q2
    assert "taylor is better than magnitude" in q2
    assert "at **2 of 2** sizes" in q3 and "4 of 7 pruned runs beat" in q3
    assert "pruning is better than training from scratch" in q3
    for name in ("dense", "scratch_100k", "scratch_50k", "um1", "um2", "um3", "um4", "sm1",
                 "sm2", "ut1"):
        assert f"| {name} |" in text
    assert "| ut1 | unstructured | taylor | one-shot | 100k | 100,000 |" in text
    assert "**56.00**" in text and "**69.00**" in text        # the best of each size
    rows = list(csv.DictReader((exp / "results.csv").open()))
    assert len(rows) == 10 and {r["run"]: r["eval_file"] for r in rows}["sm1"] == \
        "shrunk/eval_test.json"
    for png in report.PLOTS.values():
        assert (exp / png).is_file()


def test_results_signs_are_stated_whatever_they_are(tmp_path):
    exp = tmp_path / "exp"
    write_run(exp, "a", "pruned", 50.0, 50.0, 100, 100, "lowrank", "magnitude", "one-shot")
    write_run(exp, "b", "pruned", 52.0, 50.0, 100, 100, "lowrank", "magnitude", "cubic")
    write_run(exp, "c", "pruned", 55.0, 50.0, 100, 100, "lowrank", "taylor", "one-shot")
    write_run(exp, "s", "scratch", 40.0, 40.0, 100, 100)
    text = report.write_lm_results(exp).read_text()
    assert "**one-shot is better than cubic here**" in text
    assert "**magnitude is better than taylor here**" in text
    assert "at **0 of 1** sizes" in text and "**training from scratch is better" in text


def test_results_without_test_evals_use_dev_and_say_so(tmp_path):
    exp = tmp_path / "exp"
    write_run(exp, "a", "pruned", None, 50.0, 100, 100, "lowrank", "magnitude", "one-shot")
    write_run(exp, "b", "pruned", 45.0, 49.0, 100, 100, "lowrank", "magnitude", "cubic")
    text = report.write_lm_results(exp).read_text()
    assert "use **dev** perplexity (some runs have no test result yet)" in text
    assert "cubic has the lower dev ppl in **1 of 1** pairs" in text


@pytest.mark.parametrize("content, words", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"kind": "weird", "dev": {"ppl": 1}}', "'kind' is 'weird'"),
    ('{"kind": "dense", "params": 5}', "no 'dev' results"),
])
def test_a_broken_outcome_is_one_line_and_exit_2(tmp_path, cli, content, words):
    exp = tmp_path / "exp"
    hand_made(exp)
    (exp / "um2" / "outcome.json").write_text(content)
    done = cli("lm", "results", exp)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()
    assert len(err) == 1 and "um2/outcome.json" in err[0] and words in err[0], err
    assert not (exp / "RESULTS.md").exists()


def test_results_of_an_empty_or_missing_folder(tmp_path, cli):
    (tmp_path / "empty").mkdir()
    for folder, words in ((tmp_path / "empty", "no finished runs"),
                          (tmp_path / "nope", "no such folder")):
        done = cli("lm", "results", folder)
        assert done.returncode == 2 and words in done.stderr


def test_size_labels():
    assert [report.size_label(n) for n in (999, 1000, 350_000, 2_000_000, 2_500_000)] == [
        "999", "1k", "350k", "2M", "2.5M"]
