"""Collect finished runs of an experiment folder into RESULTS.md, a CSV and a PNG plot.

A run is a sub-folder with outcome.json (written by `sprune prune`), experiment.json and
optionally eval_<name>.json files (written by `sprune evaluate`).

Metrics are fractions shown in %. Higher accuracy is better, lower error rates (wer, cer,
per, and loss / ppl) are: `lower_is_better` infers the direction from the metric's name,
and the best pruned run at each target sparsity is shown in bold. When runs were trained on
different languages (experiment.json `data.train_langs`) or took their mask from another run
(`mask_source`), the table says so and the plot draws them as separate lines.
"""
from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from sprune.errors import UserError
from sprune.io import atomic_path, atomic_write_text
from sprune.runs import read_run

METHOD_ORDER = ("dense", "rp", "mpi", "omp", "imp", "parp", "parp-p")
# Metrics where lower is better (the part before "/<lang>"); everything else is higher-better.
ERROR_METRICS = ("wer", "cer", "per", "loss", "ppl", "perplexity", "error")
# Preferred metric when none is asked for, among those the runs report.
DEFAULT_METRICS = ("accuracy", "per", "wer", "cer")


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
    for outcome_path in sorted(exp_dir.glob("*/outcome.json")):
        files = read_run(outcome_path.parent)   # outcome.json is there: outcome is not None
        runs.append(RunResult(files.folder.name, files.outcome or {}, files.evals,
                              files.experiment))
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


def line_label(r: RunResult, settings: bool) -> str:
    """Legend entry of a run's line: the method, plus its languages and mask source when
    the plot mixes several."""
    label = r.method
    if settings and r.setting:
        label += f" {r.setting}"
    if r.mask_source:
        label += f" (mask from {r.mask_source})"
    return label


def plot_metric_vs_sparsity(runs: list[RunResult], metric: str, path: Path,
                            lower: bool | None = None) -> None:
    """One line per method (and training languages / mask source when runs differ in them):
    test (else dev) `metric` against achieved sparsity; dense is a horizontal line."""
    lower = lower_is_better(metric) if lower is None else lower
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = "test" if any("test" in r.evals for r in runs) else "dev"
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    settings = len({r.setting for r in runs}) > 1
    by_line: dict[str, list[RunResult]] = {}
    for r in runs:
        by_line.setdefault(line_label(r, settings), []).append(r)
    styles = line_styles()
    for label, group in by_line.items():
        points = sorted((100 * r.sparsity, 100 * r.score(split, metric)) for r in group
                        if r.score(split, metric) is not None)
        if not points:
            continue
        if group[0].method == "dense":
            ax.axhline(points[0][1], linestyle="--", label=label,
                       color="grey" if not settings else None)
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], label=label, **next(styles))
    ax.set_xlabel("sparsity of the pruned weights (%)")
    ax.set_ylabel(f"{split} {metric} (%, {'lower' if lower else 'higher'} is better)")
    ax.grid(alpha=0.3)
    outside_legend(ax)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_results(exp_dir: str | Path, metric: str | None = "accuracy",
                  title: str | None = None, lower: bool | None = None) -> Path:
    """Write RESULTS.md, results.csv and <metric>_vs_sparsity.png into `exp_dir`.

    metric None: the first of DEFAULT_METRICS the runs report. lower None: inferred from
    the metric's name (`lower_is_better`)."""
    exp_dir = Path(exp_dir)
    runs = collect(exp_dir)
    metric = metric or infer_metric(runs)
    if not any(r.score(s, metric) is not None for r in runs for s in ("dev", "test")):
        raise UserError(f"{exp_dir}: no run reports the metric '{metric}' (they report "
                        f"{', '.join(sorted({k for r in runs for k in r.outcome['dev']}))}); "
                        "pick one with --metric")
    lower = lower_is_better(metric) if lower is None else lower
    header, rows = table_rows(runs, metric, lower)
    _, marked = table_rows(runs, metric, lower, mark_best=True)
    plot_name = f"{metric.replace('/', '_')}_vs_sparsity.png"
    plot_metric_vs_sparsity(runs, metric, exp_dir / plot_name, lower)
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header] + rows)
    atomic_write_text(exp_dir / "results.csv", buffer.getvalue())
    text = (f"# {title or exp_dir.name}\n\n"
            f"Sparsity is over the pruned scope (exact zeros in the final weights); params "
            f"left counts every non-zero weight of the task model. Passes = fine-tuning "
            f"passes over the training set, all runs of a method together. "
            f"{'Lower' if lower else 'Higher'} {metric} is better; bold: the best pruned "
            f"run at each target sparsity.\n\n"
            + markdown_table(header, marked) + f"\n![{metric} vs sparsity]({plot_name})\n")
    atomic_write_text(exp_dir / "RESULTS.md", text)
    return exp_dir / "RESULTS.md"
