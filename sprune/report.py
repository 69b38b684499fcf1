"""Collect finished runs of an experiment folder into RESULTS.md, CSVs and a PNG plot.

A run is a sub-folder (or a seed<N>/ sub-folder's sub-folder, one per training seed: the
recipes' --seeds) with outcome.json (written by `sprune prune`), experiment.json and
optionally eval_<name>.json files (written by `sprune evaluate`).

Metrics are fractions shown in %. Higher accuracy is better, lower error rates (wer, cer,
per, and loss / ppl) are: `lower_is_better` infers the direction from the metric's name.
RESULTS.md starts with the pruning curves over seeds (`sprune.summary`: mean ± spread per
method and sparsity, "(n.s.)" marks, the PARP-vs-MPI mask IOU, results.csv and the plot) and
ends with every run, the best pruned run at each target sparsity in bold (runs.csv). When
runs were trained on different languages (experiment.json `data.train_langs`) or took their
mask from another run (`mask_source`), the tables say so and the plot draws them as separate
lines.
"""
from __future__ import annotations

import csv
import io
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.runs import read_run

METHOD_ORDER = ("dense", "rp", "mpi", "omp", "imp", "parp", "parp-p")
# Metrics where lower is better (the part before "/<lang>"); everything else is higher-better.
ERROR_METRICS = ("wer", "cer", "per", "loss", "ppl", "perplexity", "error")
# Preferred metric when none is asked for, among those the runs report.
DEFAULT_METRICS = ("accuracy", "per", "wer", "cer")
SEED_DIR = re.compile(r"^seed\d+$")   # the runs of one training seed (recipes' --seeds)


def line_styles() -> Iterator[dict[str, Any]]:
    """Endless matplotlib `plot` styles for the methods of one figure: hollow markers of
    distinct shapes, so methods that land on the same point stay visible."""
    for marker in itertools.cycle("osD^vP<X>*"):
        yield {"marker": marker, "markersize": 8, "markerfacecolor": "none",
               "markeredgewidth": 1.5}


def outside_legend(ax: Any) -> None:
    """The legend right of the axes, where it hides no line (save with bbox_inches='tight')."""
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9)


def lower_is_better(metric: str) -> bool:
    """True for error rates ('wer', 'per/fr-FR', ...), False for accuracy-like metrics."""
    return metric.split("/", 1)[0].lower() in ERROR_METRICS


def langs_tag(langs: list[str]) -> str:
    """How a set of training languages is named in tables: 'en-US', 'de-DE+fr-FR'."""
    return "+".join(langs)


@dataclass
class RunResult:
    name: str
    outcome: dict[str, Any]
    evals: dict[str, dict[str, float]]
    experiment: dict[str, Any] = field(default_factory=dict)

    @property
    def setting(self) -> str:
        """The training languages of the run ('' when unknown)."""
        return langs_tag(self.experiment.get("data", {}).get("train_langs", []))

    @property
    def mask_source(self) -> str | None:
        """The training languages of the run the mask came from, or None for an own mask."""
        source = self.experiment.get("mask_source")
        if not source:
            return None
        return langs_tag(source.get("train_langs", [])) or Path(source["mask"]).parent.name

    @property
    def method(self) -> str:
        return self.outcome["method"]

    @property
    def sparsity(self) -> float:
        return self.outcome["achieved_sparsity"]

    def score(self, split: str, metric: str) -> float | None:
        if split == "dev" and split not in self.evals:
            return self.outcome["dev"].get(metric)
        return self.evals.get(split, {}).get(metric)


def collect(exp_dir: str | Path) -> list[RunResult]:
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise UserError(f"{exp_dir} does not exist; give the experiment folder of a recipe")
    runs = []
    found = [*exp_dir.glob("*/outcome.json"), *(p for p in exp_dir.glob("*/*/outcome.json")
                                                 if SEED_DIR.match(p.parent.parent.name))]
    for outcome_path in sorted(found):
        files = read_run(outcome_path.parent)   # outcome.json is there: outcome is not None
        runs.append(RunResult(str(files.folder.relative_to(exp_dir)), files.outcome or {},
                              files.evals, files.experiment))
    if not runs:
        raise UserError(f"{exp_dir}: no finished runs (no */outcome.json); run the pruning "
                        "stages first")
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    runs.sort(key=lambda r: (order.get(r.method, len(order)), r.outcome["target_sparsity"],
                             r.name))
    return runs


def _fmt(value: float | None, percent: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if percent else f"{value:.2f}"


def infer_metric(runs: list[RunResult]) -> str:
    """The first of DEFAULT_METRICS that some run reports on dev or test."""
    reported = {k for r in runs for scores in [r.outcome.get("dev", {}), *r.evals.values()]
                for k in scores}
    for metric in DEFAULT_METRICS:
        if metric in reported:
            return metric
    overall = sorted(k for k in reported if "/" not in k)
    if not overall:
        raise UserError("the runs report no metric; evaluate them first (`sprune evaluate`)")
    return overall[0]


def best_runs(runs: list[RunResult], metric: str, lower: bool) -> set[str]:
    """Names of the best pruned runs (test, else dev score) per (setting, target sparsity)."""
    split = "test" if any("test" in r.evals for r in runs) else "dev"
    best: dict[tuple[str, float], tuple[float, list[str]]] = {}
    for r in runs:
        value = r.score(split, metric)
        if r.method == "dense" or value is None:
            continue
        key = (r.setting, round(r.outcome["target_sparsity"], 6))
        value = -value if lower else value
        if key not in best or value > best[key][0]:
            best[key] = (value, [r.name])
        elif value == best[key][0]:
            best[key][1].append(r.name)
    return {name for _, names in best.values() for name in names}


def table_rows(runs: list[RunResult], metric: str, lower: bool | None = None,
               mark_best: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the results table; `mark_best` bolds (markdown) the best pruned
    run's score at each target sparsity."""
    lower = lower_is_better(metric) if lower is None else lower
    langs = sorted({k.split("/", 1)[1] for r in runs for split in r.evals.values()
                    for k in split if k.startswith(f"{metric}/")})
    settings = len({r.setting for r in runs}) > 1
    sources = any(r.mask_source for r in runs)
    header = ["run", "method", "target sparsity %", "achieved sparsity %", "params left",
              f"dev {metric} %", f"test {metric} %"] + [f"test {lang} %" for lang in langs] + \
             ["fine-tuning passes"] + (["trained on"] if settings else []) + \
             (["mask from"] if sources else [])
    best = best_runs(runs, metric, lower) if mark_best else set()
    split = "test" if any("test" in r.evals for r in runs) else "dev"   # the one bolded
    rows = []
    for r in runs:
        o = r.outcome
        scores = {s: _fmt(r.score(s, metric)) for s in ("dev", "test")}
        if r.name in best:
            scores[split] = f"**{scores[split]}**"
        rows.append([r.name, r.method, _fmt(o["target_sparsity"]), _fmt(o["achieved_sparsity"]),
                     f"{o['params_left'] / 1e6:.3f} M / {o['total_params'] / 1e6:.3f} M",
                     scores["dev"], scores["test"]]
                    + [_fmt(r.evals.get("test", {}).get(f"{metric}/{lang}")) for lang in langs]
                    + [_fmt(o["passes"], percent=False)]
                    + ([r.setting or "-"] if settings else [])
                    + ([r.mask_source or "-"] if sources else []))
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(exp_dir: str | Path, metric: str | None = "accuracy",
                  title: str | None = None, lower: bool | None = None,
                  test_data: str | Path | None = None) -> Path:
    """Write RESULTS.md, results.csv, runs.csv and <metric>_vs_sparsity.png into `exp_dir`.

    RESULTS.md: the curve table of each setting (mean ± spread over seeds, `sprune.summary`),
    the PARP-vs-MPI mask IOU, the plot, then every run. results.csv: the cells, long format
    (`sprune.summary.CSV_HEADER`); runs.csv: the table of every run. metric None: the first
    of DEFAULT_METRICS the runs report. lower None: inferred from the metric's name
    (`lower_is_better`). test_data: the data dir of the test scores (its utterance count sizes
    the one-seed noise floor; default: the folder named after the split beside each run's
    dev dir)."""
    from sprune.analysis import load_runs
    from sprune.summary import CSV_HEADER, csv_rows, curves_markdown, gather, plot_curves

    exp_dir = Path(exp_dir)
    runs = collect(exp_dir)
    metric = metric or infer_metric(runs)
    if not any(r.score(s, metric) is not None for r in runs for s in ("dev", "test")):
        raise UserError(f"{exp_dir}: no run reports the metric '{metric}' (they report "
                        f"{', '.join(sorted({k for r in runs for k in r.outcome['dev']}))}); "
                        "pick one with --metric")
    if test_data is not None and not (Path(test_data) / "utt2spk").is_file():
        raise UserError(f"--test-data {test_data}: no utt2spk there; give the data dir the "
                        "runs were tested on")
    lower = lower_is_better(metric) if lower is None else lower
    header, rows = table_rows(runs, metric, lower)
    _, marked = table_rows(runs, metric, lower, mark_best=True)
    split = "test" if any("test" in r.evals for r in runs) else "dev"
    curves = gather(load_runs(exp_dir), split, metric, lower, test_data)
    plot_name = f"{metric.replace('/', '_')}_vs_sparsity.png"
    plot_curves(curves, exp_dir / plot_name, title=title or exp_dir.name)
    for name, table in (("results.csv", [CSV_HEADER, *csv_rows(curves)]),
                        ("runs.csv", [header, *rows])):
        buffer = io.StringIO()
        csv.writer(buffer).writerows(table)
        atomic_write_text(exp_dir / name, buffer.getvalue())
    text = (f"# {title or exp_dir.name}\n\n"
            f"## Pruning curves\n\n{curves_markdown(curves)}\n"
            f"![{metric} vs sparsity]({plot_name})\n\n"
            f"Data: [results.csv](results.csv) (mean, std, min, max, seeds of every cell).\n\n"
            f"## Every run\n\n"
            f"Sparsity is over the pruned scope (exact zeros in the final weights); params "
            f"left counts every non-zero weight of the task model. Passes = fine-tuning "
            f"passes over the training set, all runs of a method together. "
            f"{'Lower' if lower else 'Higher'} {metric} is better; bold: the best pruned "
            f"run at each target sparsity. Data: [runs.csv](runs.csv).\n\n"
            + markdown_table(header, marked))
    atomic_write_text(exp_dir / "RESULTS.md", text)
    return exp_dir / "RESULTS.md"
