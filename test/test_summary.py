"""Pruning curves over seeds (sprune.spread, sprune.summary) on hand-made run folders: mean ±
std per cell, "(n.s.)" against the best of a sparsity, the one-seed noise floor from the test
size, chance from the intents, the PARP-vs-MPI mask IOU, results.csv, the PNG, and
`sprune results` errors."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from sprune.prune.mask import Mask
from sprune.spread import Cell, marked, noise_floor, not_significant, spread
from sprune.summary import gather

PNG = b"\x89PNG\r\n\x1a\n"
# (method, sparsity) -> test accuracy of seeds 1, 2, 3
ACCURACY = {("dense", 0.0): (0.50, 0.52, 0.54), ("mpi", 0.5): (0.30, 0.32, 0.34),
            ("omp", 0.5): (0.41, 0.42, 0.43), ("parp", 0.5): (0.40, 0.44, 0.48)}
# seed -> (MPI mask, PARP mask): IOU 1, 3/5, 1/3
MASKS = {1: ([1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]), 2: ([1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 1, 0]),
         3: ([1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 0, 0])}


def intent_run(exp: Path, seed: int | None, method: str, sparsity: float, accuracy: float,
               keep: list[int] | None = None) -> None:
    """A finished intent run folder (no weights) of one seed, as `sprune prune` leaves it."""
    name = "dense" if method == "dense" else f"{method}_s{sparsity}"
    folder = exp / (f"seed{seed}" if seed is not None else "") / name
    folder.mkdir(parents=True)
    (folder / "prune.json").write_text(json.dumps({"method": method, "sparsity": sparsity}))
    (folder / "experiment.json").write_text(json.dumps({
        "config": {"task": "intent", "train": {"seed": 0 if seed is None else seed}},
        "intents": ["a", "b", "c", "d"],
        "data": {"train": "data/train", "dev": "data/dev", "train_langs": ["en-US"]}}))
    (folder / "outcome.json").write_text(json.dumps({
        "method": method, "target_sparsity": sparsity, "achieved_sparsity": sparsity,
        "scope_params": 6, "params_left": 6, "total_params": 6,
        "passes": 2.0 if method in ("dense", "parp") else 4.0, "dev": {"accuracy": accuracy},
        "extra": {}}))
    (folder / "eval_test.json").write_text(json.dumps({"accuracy": accuracy}))
    if keep is not None:
        Mask({"upstream.w": torch.tensor(keep, dtype=torch.bool)}).save(folder / "mask")


@pytest.fixture
def seeds_exp(tmp_path) -> Path:
    exp = tmp_path / "exp" / "three"
    for (method, sparsity), values in ACCURACY.items():
        for seed, value in zip((1, 2, 3), values):
            keep = {"mpi": MASKS[seed][0], "parp": MASKS[seed][1]}.get(method)
            intent_run(exp, seed, method, sparsity, value, keep)
    return exp


@pytest.fixture
def one_seed_exp(tmp_path, monkeypatch) -> Path:
    """One seed, runs directly in the experiment folder, a test dir of 100 utterances beside
    the dev dir (found from the recipe folder, the current directory)."""
    monkeypatch.chdir(tmp_path)
    test = tmp_path / "data" / "test"
    test.mkdir(parents=True)
    (test / "utt2spk").write_text("".join(f"s-u{i:03d} s\n" for i in range(100)))
    exp = tmp_path / "exp" / "one"
    for method, value in (("dense", 0.50), ("mpi", 0.20), ("omp", 0.35), ("parp", 0.40)):
        intent_run(exp, None, method, 0.0 if method == "dense" else 0.5, value)
    return exp


def test_cell_rules_and_noise_floor():
    a, b, single = Cell((0.40, 0.44, 0.48)), Cell((0.41, 0.42, 0.43)), Cell((0.2,))
    assert math.isclose(a.mean, 0.44) and math.isclose(a.std, 0.04) and a.text() == "44.0 ± 4.0"
    assert (a.n, a.low, a.high) == (3, 0.40, 0.48) and single.text() == "20.0"
    assert spread(a, b) == a.std and not_significant(a, b) and marked(b, a).endswith("(n.s.)")
    assert spread(a, single) is None and not not_significant(a, single)   # no spread known
    assert spread(a, single, floor=0.3) == 0.3 and not_significant(a, single, floor=0.3)
    assert marked(a, a) == "44.0 ± 4.0" and marked(a, None) == "44.0 ± 4.0"
    # binomial: 1.96 * sqrt(0.5 * 0.5 / 100) = 0.098
    assert noise_floor(0.5, 100) == pytest.approx(0.098)
    assert noise_floor(1.3, 10) == 0.0   # error rates above 1 are clipped
    with pytest.raises(ValueError):
        noise_floor(0.5, 0)


def test_three_seeds_mean_std_marks_iou_csv_and_plot(seeds_exp, cli):
    done = cli("results", seeds_exp, "--title", "Toy")
    assert done.returncode == 0, done.stderr
    text = (seeds_exp / "RESULTS.md").read_text()
    assert "over 3 seeds (1 2 3)" in text
    rows = {line.split(" | ")[0]: line for line in text.splitlines()
            if line.startswith("| ") and " | " in line}
    assert rows["| dense"] == "| dense | 52.0 ± 2.0 |"
    assert rows["| parp"] == "| parp | **44.0 ± 4.0** |"                  # best at 50 %
    assert rows["| omp"] == "| omp | 42.0 ± 1.0 (n.s.) |"                # 2 < max(4, 1)
    assert rows["| mpi"] == "| mpi | 32.0 ± 2.0 |"                       # 12 > 4
    assert "Chance: 25.0 % (1 / 4 intents of the training set)." in text
    assert "| parp vs mpi | 64.4 ± 33.6 |" in text     # IOU 1, 0.6, 1/3
    table = list(csv.DictReader((seeds_exp / "results.csv").open()))
    cell = {(r["method"], r["quantity"]): r for r in table}
    omp = cell["omp", "accuracy"]
    assert (omp["n"], omp["seeds"], omp["mark"], omp["better"]) == ("3", "1 2 3", "n.s.", "higher")
    assert float(omp["min"]) == 0.41 and float(omp["max"]) == 0.43
    assert cell["parp", "accuracy"]["mark"] == "best" and cell["mpi", "accuracy"]["mark"] == ""
    assert float(cell["parp", "iou_mpi"]["mean"]) == pytest.approx((1 + 0.6 + 1 / 3) / 3)
    assert float(cell["omp", "passes"]["mean"]) == 4.0
    assert (seeds_exp / "accuracy_vs_sparsity.png").read_bytes()[:8] == PNG
    runs = list(csv.reader((seeds_exp / "runs.csv").open()))
    assert len(runs) == 1 + 12 and "seed2/omp_s0.5" in {r[0] for r in runs}


def test_one_seed_note_gives_the_noise_floor_and_marks_by_it(one_seed_exp, cli):
    done = cli("results", one_seed_exp)
    assert done.returncode == 0, done.stderr
    text = (one_seed_exp / "RESULTS.md").read_text()
    # 1.96 * sqrt(0.5 * 0.5 / 100): 9.8 points at the dense accuracy, on 100 test utterances
    assert "1 seed (0): no spread; differences under 9.8 points are noise" in text
    assert "N = 100 test utterances" in text and "p = 50.0 %" in text
    assert "| omp | 35.0 (n.s.) |" in text and "| mpi | 20.0 |" in text
    assert "| parp | **40.0** |" in text
    floor = {r["noise_floor"] for r in csv.DictReader((one_seed_exp / "results.csv").open())}
    assert floor == {str(noise_floor(0.5, 100))}


def test_gather_without_test_size_says_it_cannot_judge(seeds_exp):
    from sprune.analysis import load_runs
    from sprune.summary import spread_note

    runs = [r for r in load_runs(seeds_exp) if r.seed == 1]
    curves = gather(runs, "test", "accuracy", lower=False)
    assert curves.floors == {} and curves.max_seeds() == 1
    assert "the number of test utterances is unknown" in spread_note(curves, "en-US")


def test_results_errors_are_one_line(seeds_exp, tmp_path, cli):
    done = cli("results", seeds_exp, "--test-data", tmp_path / "nowhere")
    assert done.returncode == 2 and "--test-data" in done.stderr and "utt2spk" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
