"""`sprune pathways results`: the per-language table with mean ± spread over seeds, the
significance marks against the baseline, the CSV and the plots, on a hand-made study."""
from __future__ import annotations

import csv
import json
import math

import torch

from sprune.prune.mask import Mask

# (method, sparsity, seed) -> {language: CER}
VALUES = {
    ("imp", 0.5, 1): {"aa": 0.20, "bb": 0.30}, ("imp", 0.5, 2): {"aa": 0.22, "bb": 0.34},
    ("pathways", 0.5, 1): {"aa": 0.10, "bb": 0.32}, ("pathways", 0.5, 2): {"aa": 0.12, "bb": 0.30},
    ("imp", 0.7, 1): {"aa": 0.40, "bb": 0.50}, ("imp", 0.7, 2): {"aa": 0.44, "bb": 0.50},
    ("pathways", 0.7, 1): {"aa": 0.30, "bb": 0.40}, ("pathways", 0.7, 2): {"aa": 0.30, "bb": 0.42},
}


def write(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def study(root):
    write(root / "dense" / "eval_test.json", {"cer": 0.15, "cer/aa": 0.1, "cer/bb": 0.2})
    for (method, sparsity, seed), cers in VALUES.items():
        folder = root / f"seed{seed}" / f"s{sparsity:g}" / method
        if method == "imp":   # one monolingual run per language
            for lang, value in cers.items():
                write(folder / lang / "eval_test.json", {"cer": value, f"cer/{lang}": value})
        else:
            write(folder / "eval_test.json", {"cer": sum(cers.values()) / 2,
                                              **{f"cer/{k}": v for k, v in cers.items()}})
            for lang, keep in (("aa", [True, True, False, False]),
                               ("bb", [True, False, True, False])):
                Mask({"w": torch.tensor(keep)}).save(folder / "pathways" / lang)
                for step, drift in (("000000_initial", keep), ("000004_adapt", [True] * 2 + [False] * 2)):
                    Mask({"w": torch.tensor(drift)}).save(folder / "rounds" / step / lang)
    return root


def test_table_means_spread_significance_csv_and_plots(tmp_path, cli):
    root = study(tmp_path / "exp")
    done = cli("pathways", "results", root, "--title", "Toy study")
    assert done.returncode == 0, done.stderr
    text = (root / "RESULTS.md").read_text()
    assert text.startswith("# Toy study")
    assert "Dense multilingual model: aa 10.0, bb 20.0" in text
    rows = {tuple(line.split(" | ")[:2]): line for line in text.splitlines()
            if line.startswith("| imp") or line.startswith("| pathways")}
    # imp 0.5, aa: 20 and 22 -> 21.0 ± 1.4 (sample std sqrt(2))
    assert "| 21.0 ± 1.4 |" in rows[("| imp", "0.5")]
    # pathways 0.5, bb: 32 / 30 vs imp 30 / 34: difference 1.0 < std 2.8 -> not significant
    assert "31.0 ± 1.4 (n.s.)" in rows[("| pathways", "0.5")]
    # pathways 0.5, aa: 11 vs 21, spread 1.4: significant
    assert "| 11.0 ± 1.4 |" in rows[("| pathways", "0.5")]
    # avg of each seed: imp 0.7 -> (0.45, 0.47) -> 46.0 ± 1.4
    assert rows[("| imp", "0.7")].endswith("| 46.0 ± 1.4 |")
    with open(root / "results.csv") as f:
        table = list(csv.DictReader(f))
    imp = next(r for r in table if r["method"] == "imp" and r["sparsity"] == "0.5")
    assert math.isclose(float(imp["aa_mean"]), 0.21) and math.isclose(
        float(imp["aa_std"]), math.sqrt(2) / 100, rel_tol=1e-9)
    for png in ("cer_vs_sparsity.png", "iou_pathways_s0.7.png", "sharing_pathways_s0.7.png",
                "mask_drift_s0.7.png"):
        assert (root / png).stat().st_size > 1000, png
        assert f"]({png})" in text


def test_unit_ngram_decoding_is_stated_with_the_greedy_dense_numbers(tmp_path, cli):
    root = study(tmp_path / "exp")
    write(root / "dense" / "eval_test_greedy.json", {"cer": 0.2, "cer/aa": 0.15, "cer/bb": 0.25})
    write(root / "dense" / "decode_unitlm" / "result.json", {
        "beam": 16, "kenlm": "/x/exp/lm/unit6gram.arpa", "lm_weight": 0.8, "dev": "data/dev",
        "tune_on": "cer", "tuning": [{"lm_weight": 0.4}, {"lm_weight": 0.8}]})
    assert cli("pathways", "results", root).returncode == 0
    text = (root / "RESULTS.md").read_text()
    assert ("Dense multilingual model: aa 10.0, bb 20.0 (greedy decoding: aa 15.0, bb 25.0)"
            in text)
    assert ("with the n-gram over the units `unit6gram.arpa` at weight 0.8, chosen on `dev` "
            "CER with the dense model from 0.4, 0.8" in text)


def test_no_runs_is_one_line(tmp_path, cli):
    (tmp_path / "exp").mkdir()
    done = cli("pathways", "results", tmp_path / "exp")
    assert done.returncode == 2 and "no finished runs" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = cli("pathways", "export", tmp_path / "exp")
    assert done.returncode == 2 and "export needs --lang" in done.stderr
