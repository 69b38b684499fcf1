"""`sprune analyze` and the results table on hand-made run folders: IOU matrices of known
masks, the transfer-grid arithmetic on hand-made error rates, PARP final-vs-initial IOU,
the curves CSV, the joint-vs-per-language table, and lower-is-better metrics."""
from __future__ import annotations

import csv
import json
import math
import re

import pytest
import torch

from sprune.analysis import (iou_matrix, load_runs, parp_initial_iou, relative_change,
                             transfer_grid, write_analysis)
from sprune.prune.mask import Mask
from sprune.report import lower_is_better, write_results

EN, FR = "en-US", "fr-FR"


def mask(*bits: int) -> Mask:
    return Mask({"upstream.w": torch.tensor(bits, dtype=torch.bool)})


MASKS = {
    "omp_en": mask(1, 1, 1, 1, 0, 0, 0, 0),
    "omp_fr": mask(1, 1, 1, 0, 1, 0, 0, 0),
    "mpi": mask(1, 1, 0, 0, 1, 1, 0, 0),
    "rp": mask(0, 0, 0, 0, 1, 1, 1, 1),
}


def make_run(exp, name, method, sparsity, langs, *, test=None, dev=None, passes=1.0,
             final=None, initial=None, source=None):
    """A run folder as `sprune prune` / `sprune evaluate` leave it (no model weights)."""
    folder = exp / name
    folder.mkdir(parents=True)
    (folder / "prune.json").write_text(json.dumps({"method": method, "sparsity": sparsity}))
    doc = {"config": {"task": "ctc"}, "data": {"train_langs": list(langs)}}
    if source is not None:
        doc["mask_source"] = {"mask": str(exp / "elsewhere" / "mask"), "run": None,
                              "method": "omp", "sparsity": sparsity, "train_langs": [source]}
    (folder / "experiment.json").write_text(json.dumps(doc))
    if final is not None:
        final.save(folder / "mask")
    if initial is not None:
        initial.save(folder / "initial_mask")
    if test is not None or dev is not None:
        kept = final.num_kept() if final is not None else 8
        (folder / "outcome.json").write_text(json.dumps({
            "method": method, "target_sparsity": 0.0 if method == "dense" else sparsity,
            "achieved_sparsity": 0.0 if method == "dense" else sparsity, "scope_params": 8,
            "params_left": kept, "total_params": 8, "passes": passes,
            "dev": dev or {"wer": 0.9}, "extra": {}}))
    if test is not None:
        (folder / "eval_test.json").write_text(json.dumps(test))
    return folder


@pytest.fixture
def exp(tmp_path):
    """H2L-like study: en-US and fr-FR runs, transfers between them, a joint run."""
    e = tmp_path / "exp"
    make_run(e, "en/dense", "dense", 0.5, [EN], test={"wer": 0.10}, passes=2.0)
    make_run(e, "en/omp_s0.5", "omp", 0.5, [EN], test={"wer": 0.20}, passes=4.0,
             final=MASKS["omp_en"])
    make_run(e, "en/mpi_s0.5", "mpi", 0.5, [EN], test={"wer": 0.30}, final=MASKS["mpi"])
    make_run(e, "en/rp_s0.5", "rp", 0.5, [EN], test={"wer": 0.50}, final=MASKS["rp"])
    make_run(e, "en/parp_s0.5", "parp", 0.5, [EN], test={"wer": 0.10}, final=MASKS["omp_en"],
             initial=MASKS["omp_fr"])
    make_run(e, "en/parp_s0.25", "parp", 0.25, [EN], test={"wer": 0.08},
             final=mask(1, 1, 1, 1, 1, 1, 0, 0), initial=mask(1, 1, 1, 1, 1, 1, 0, 0))
    make_run(e, "fr/dense", "dense", 0.5, [FR], test={"wer": 0.30}, passes=2.0)
    make_run(e, "fr/omp_s0.5", "omp", 0.5, [FR], test={"wer": 0.40}, final=MASKS["omp_fr"])
    make_run(e, "fr/rp_s0.5", "rp", 0.5, [FR], test={"wer": 0.60}, final=MASKS["rp"])
    make_run(e, "fr/omp_mask_only", "omp", 0.9, [FR], final=mask(1, 0, 0, 0, 0, 0, 0, 0))
    # transfers: regular sub-fine-tuning (omp) and PARP, masks from the other language
    make_run(e, "xfer/omp_fr2en", "omp", 0.5, [EN], test={"wer": 0.25},
             final=MASKS["omp_fr"], source=FR)
    make_run(e, "xfer/omp_en2fr", "omp", 0.5, [FR], test={"wer": 0.30},
             final=MASKS["omp_en"], source=EN)
    make_run(e, "xfer/parp_fr2en", "parp", 0.5, [EN], test={"wer": 0.18},
             final=MASKS["omp_en"], initial=MASKS["omp_fr"], source=FR)
    make_run(e, "xfer/parp_en2en", "parp", 0.5, [EN], test={"wer": 0.15},
             final=MASKS["omp_en"], initial=MASKS["omp_en"], source=EN)
    make_run(e, "xfer/parp_en2fr", "parp", 0.5, [FR], test={"wer": 0.35},
             final=MASKS["omp_fr"], initial=MASKS["omp_en"], source=EN)
    # one joint multilingual subnetwork, decoded per language
    make_run(e, "joint/omp_s0.5", "omp", 0.5, [EN, FR],
             test={"wer": 0.30, f"wer/{EN}": 0.22, f"wer/{FR}": 0.38})
    return e


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_iou_matrix_of_known_masks():
    rows = {"en": MASKS["omp_en"], "fr": MASKS["omp_fr"], "MPI": MASKS["mpi"],
            "RP": MASKS["rp"]}
    cols = {"en": MASKS["omp_en"], "fr": MASKS["omp_fr"]}
    expected = [[1.0, 3 / 5], [3 / 5, 1.0], [2 / 6, 3 / 5], [0.0, 1 / 7]]
    matrix = iou_matrix(rows, cols)
    assert [len(row) for row in matrix] == [2, 2, 2, 2]
    assert sum(matrix, []) == pytest.approx(sum(expected, []))


def test_relative_change_and_transfer_grid_arithmetic():
    assert relative_change(0.25, 0.20) == pytest.approx(0.25)
    assert relative_change(0.30, 0.40) == pytest.approx(-0.25)
    assert relative_change(0.0, 0.0) == 0.0 and math.isinf(relative_change(0.1, 0.0))
    errors = {("fr", "en"): 0.25, ("en", "fr"): 0.30, ("en", "en"): 0.20, ("en", "de"): 0.5}
    grid = transfer_grid(errors, {"en": 0.20, "fr": 0.40})
    assert grid == pytest.approx({("fr", "en"): 0.25, ("en", "fr"): -0.25, ("en", "en"): 0.0})


def test_parp_final_vs_initial_iou(exp):
    rows = {r.name: (init, iou) for r, init, iou in parp_initial_iou(load_runs(exp))}
    assert rows["en/parp_s0.5"] == pytest.approx((0.5, 3 / 5))
    assert rows["en/parp_s0.25"] == pytest.approx((0.25, 1.0))
    assert rows["xfer/parp_fr2en"] == pytest.approx((0.5, 3 / 5))
    assert "en/omp_s0.5" not in rows


def test_analyze_writes_curves_iou_transfer_and_parp_tables(exp, tmp_path):
    path = write_analysis(exp)
    out = exp / "analysis"
    assert path == out / "ANALYSIS.md"
    text = path.read_text()
    for heading in ("(a) Pruning curves", "(b) IOU of omp masks", "(c) Cross-lingual mask "
                    "transfer", "(e) PARP: final vs initial"):
        assert heading in text
    # (a) curves: own-mask runs only (no transfers), metric inferred (wer), test split
    curves = read_csv(out / "curves.csv")
    assert curves[0] == ["setting", "method", "run", "target_sparsity", "achieved_sparsity",
                         "split", "metric", "value", "passes", "seed"]
    by_run = {row[2]: row for row in curves[1:]}
    assert set(by_run) == {"en/dense", "en/omp_s0.5", "en/mpi_s0.5", "en/rp_s0.5",
                           "en/parp_s0.5", "en/parp_s0.25", "fr/dense", "fr/omp_s0.5",
                           "fr/rp_s0.5", "joint/omp_s0.5"}
    assert by_run["en/omp_s0.5"] == [EN, "omp", "en/omp_s0.5", "0.5", "0.5", "test", "wer",
                                     "0.2", "4.0", ""]
    assert by_run["en/dense"][3] == "0.0" and by_run["joint/omp_s0.5"][0] == f"{EN}+{FR}"
    for setting in (EN, FR, f"{EN}+{FR}"):
        assert (out / f"curves_{setting.replace('+', '_')}.png").stat().st_size > 1000
    # per setting, error and passes tables: methods x target sparsity, dense repeated
    assert "| method | 25 % | 50 % |" in text and "| omp | - | 20.0 |" in text
    assert "| dense | 2.00 | 2.00 |" in text and "| omp | - | 4.00 |" in text
    joint = read_csv(out / "joint.csv")
    assert joint[1:] == [[EN, "omp", "0.5", "0.2", "0.22"], [FR, "omp", "0.5", "0.4", "0.38"]]
    # (b) IOU at every sparsity with omp masks: 0.5 (matrix) and 0.9 (fr only)
    iou = read_csv(out / "iou_omp_s0.50.csv")
    assert iou[0] == ["mask", EN, FR]
    assert [row[0] for row in iou[1:]] == [EN, FR, "MPI", "RP"]
    assert [float(v) for row in iou[1:] for v in row[1:]] == pytest.approx(
        [1.0, 0.6, 0.6, 1.0, 1 / 3, 0.6, 0.0, 1 / 7])
    assert (out / "iou_omp_s0.90.csv").is_file() and (out / "iou_omp_s0.50.png").is_file()
    # (c) transfer grids: rows source, columns target, relative change vs same language
    grid = read_csv(out / "transfer_omp_s0.50.csv")
    assert grid[0] == ["source \\ target", EN, FR]
    cells = {row[0]: row[1:] for row in grid[1:]}
    assert float(cells[EN][0]) == 0.0 and float(cells[EN][1]) == pytest.approx(-0.25)
    assert float(cells[FR][0]) == pytest.approx(0.25) and float(cells[FR][1]) == 0.0
    assert [float(v) for v in cells["RP"]] == pytest.approx([1.5, 0.5])
    parp = read_csv(out / "transfer_parp_s0.50.csv")
    cells = {row[0]: row[1:] for row in parp[1:]}
    # en baseline: the en->en PARP run (0.15), not the plain MPI-started PARP run (0.10);
    # fr has no PARP baseline (neither fr->fr nor a plain fr PARP run)
    assert float(cells[FR][0]) == pytest.approx(0.18 / 0.15 - 1)
    assert float(cells[EN][0]) == pytest.approx(0.0) and cells[EN][1] == ""
    assert "No same-language baseline for fr-FR" in text
    # (e) PARP final vs initial
    rows = read_csv(out / "parp_initial_iou.csv")
    assert rows[0][-1] == "iou" and len(rows) == 1 + 5        # every PARP run, transfers too
    by_run = {row[2]: row for row in rows[1:]}
    assert by_run["en/parp_s0.5"][3] == "MPI" and float(by_run["en/parp_s0.5"][-1]) == 0.6
    assert by_run["xfer/parp_fr2en"][3] == f"from {FR}"
    assert (out / "parp_initial_iou.png").stat().st_size > 1000


def test_analyze_options_pick_metric_split_and_sparsity(exp, tmp_path):
    write_analysis(exp, tmp_path / "out", metric="wer", split="dev", iou_sparsities=[0.9])
    curves = read_csv(tmp_path / "out" / "curves.csv")
    assert {row[5] for row in curves[1:]} == {"dev"} and {row[7] for row in curves[1:]} == {"0.9"}
    assert not (tmp_path / "out" / "iou_omp_s0.50.csv").exists()
    assert read_csv(tmp_path / "out" / "iou_omp_s0.90.csv")[1][1] == "1.0"


def test_analyze_cli_and_its_errors(exp, tmp_path, cli):
    done = cli("analyze", exp, "--out", tmp_path / "a", "--iou-sparsity", "0.5")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "ANALYSIS.md").is_file()
    (tmp_path / "empty").mkdir()
    for args, message in (((tmp_path / "none",), "does not exist"),
                          ((tmp_path / "empty",), "no run folders"),
                          ((exp, "--metric", "bleu"), "no run reports 'bleu' on test")):
        done = cli("analyze", *args)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_results_table_for_error_rates(exp):
    assert lower_is_better("wer") and lower_is_better("per/fr-FR") and lower_is_better("cer")
    assert not lower_is_better("accuracy") and not lower_is_better("accuracy/en-US")
    flat = exp / "en"
    write_results(flat, metric=None)                 # inferred: wer, lower is better
    table = (flat / "RESULTS.md").read_text()
    assert "test wer %" in table and "Lower wer is better" in table
    assert "| parp_s0.5 | parp | 50.0 | 50.0 |" in table
    assert "| **10.0** |" in table and "| 20.0 |" in table    # best at 50 %: parp (10 % WER)
    assert "**" not in (flat / "results.csv").read_text() + (flat / "runs.csv").read_text()
    assert (flat / "wer_vs_sparsity.png").stat().st_size > 1000
    write_results(exp / "xfer", metric="wer")         # several settings and mask sources
    text = (exp / "xfer" / "RESULTS.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| run |"))
    assert "trained on" in header and "mask from" in header
    assert "\n### en-US, mask from fr-FR\n" in text     # a curve table per setting and source
    from sprune.errors import UserError

    with pytest.raises(UserError, match="no run reports the metric 'per'"):
        write_results(flat, metric="per")


def test_report_combines_analyses_with_links_relative_to_it(exp, tmp_path, cli):
    import shutil

    second = exp.parent / "exp2" / "csr"
    shutil.copytree(exp / "fr", second / "fr")
    report = exp.parent / "RESULTS.md"
    done = cli("analyze", exp, second, "--report", report, "--title", "Study", "--note",
               "One seed.")
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert text.startswith("# Study\n\nOne seed.\n\n## exp\n")
    assert "\n## csr\n" in text and "\n### (a) Pruning curves and fine-tuning passes\n" in text
    assert f"\n#### {EN}\n" in text and "\n#### 50 % sparsity\n" in text   # nested one deeper
    assert f"\n### {EN}\n" in (exp / "analysis" / "ANALYSIS.md").read_text()
    # every linked file exists relative to the report (each analysis has its own folder)
    links = re.findall(r"\]\(([^)]+\.(?:png|csv))\)", text)
    assert "exp/analysis/curves.csv" in links and "exp2/csr/analysis/curves.csv" in links
    assert all((report.parent / link).is_file() for link in links)
    # each folder still gets its own ANALYSIS.md, links relative to itself
    own = (second / "analysis" / "ANALYSIS.md").read_text()
    assert own.startswith("# csr: analysis") and "](curves.csv)" in own
    for args, message in (((exp, second), "--report"),
                          ((exp, "--report", report, "--out", tmp_path / "o"), "--out")):
        done = cli("analyze", *args)
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_results_and_analyze_name_an_unreadable_run_file(exp, cli):
    (exp / "en" / "dense" / "eval_test.json").write_text("{not json")
    for command in ("results", "analyze"):
        folder = exp / "en" if command == "results" else exp
        done = cli(command, folder)
        assert done.returncode == 2, done.stderr
        assert "en/dense/eval_test.json" in done.stderr and "re-run the stage" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
