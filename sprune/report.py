"""Collect finished runs of an experiment folder into RESULTS.md, a CSV and a PNG plot.

A run is a sub-folder with outcome.json (written by `sprune prune`) and optionally
eval_<name>.json files (written by `sprune evaluate`).
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sprune.errors import UserError
from sprune.io import atomic_path, atomic_write_text

METHOD_ORDER = ("dense", "rp", "mpi", "omp", "imp", "parp", "parp-p")


@dataclass
class RunResult:
    name: str
    outcome: dict[str, Any]
    evals: dict[str, dict[str, float]]

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
        folder = outcome_path.parent
        evals = {p.stem[len("eval_"):]: json.loads(p.read_text())
                 for p in sorted(folder.glob("eval_*.json"))}
        runs.append(RunResult(folder.name, json.loads(outcome_path.read_text()), evals))
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


def table_rows(runs: list[RunResult], metric: str) -> tuple[list[str], list[list[str]]]:
    langs = sorted({k.split("/", 1)[1] for r in runs for split in r.evals.values()
                    for k in split if k.startswith(f"{metric}/")})
    header = ["run", "method", "target sparsity %", "achieved sparsity %", "params left",
              f"dev {metric} %", f"test {metric} %"] + [f"test {lang} %" for lang in langs] + \
             ["fine-tuning passes"]
    rows = []
    for r in runs:
        o = r.outcome
        rows.append([r.name, r.method, _fmt(o["target_sparsity"]), _fmt(o["achieved_sparsity"]),
                     f"{o['params_left'] / 1e6:.3f} M / {o['total_params'] / 1e6:.3f} M",
                     _fmt(r.score("dev", metric)), _fmt(r.score("test", metric))]
                    + [_fmt(r.evals.get("test", {}).get(f"{metric}/{lang}")) for lang in langs]
                    + [_fmt(o["passes"], percent=False)])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_metric_vs_sparsity(runs: list[RunResult], metric: str, path: Path) -> None:
    """One line per method: test (else dev) `metric` against achieved sparsity; dense is a
    horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = "test" if any("test" in r.evals for r in runs) else "dev"
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    by_method: dict[str, list[RunResult]] = {}
    for r in runs:
        by_method.setdefault(r.method, []).append(r)
    for method, group in by_method.items():
        points = sorted((100 * r.sparsity, 100 * r.score(split, metric)) for r in group
                        if r.score(split, metric) is not None)
        if not points:
            continue
        if method == "dense":
            ax.axhline(points[0][1], color="grey", linestyle="--", label="dense")
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    ax.set_xlabel("sparsity of the pruned weights (%)")
    ax.set_ylabel(f"{split} {metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_results(exp_dir: str | Path, metric: str = "accuracy", title: str | None = None
                  ) -> Path:
    """Write RESULTS.md, results.csv and <metric>_vs_sparsity.png into `exp_dir`."""
    exp_dir = Path(exp_dir)
    runs = collect(exp_dir)
    header, rows = table_rows(runs, metric)
    plot_name = f"{metric}_vs_sparsity.png"
    plot_metric_vs_sparsity(runs, metric, exp_dir / plot_name)
    buffer = io.StringIO()
    csv.writer(buffer).writerows([header] + rows)
    atomic_write_text(exp_dir / "results.csv", buffer.getvalue())
    text = (f"# {title or exp_dir.name}\n\n"
            f"Sparsity is over the pruned scope (exact zeros in the final weights); params "
            f"left counts every non-zero weight of the task model. Passes = fine-tuning "
            f"passes over the training set, all runs of a method together.\n\n"
            + markdown_table(header, rows) + f"\n![{metric} vs sparsity]({plot_name})\n")
    atomic_write_text(exp_dir / "RESULTS.md", text)
    return exp_dir / "RESULTS.md"
