"""The study outputs of paper 001 from the run folders of an experiment (`sprune analyze`).

Every run folder written by `sprune prune` (found at any depth under the experiment folder by
its prune.json) tells what it is:

    prune.json       method and target sparsity
    experiment.json  data.train_langs: the languages it was fine-tuned on (its *setting*:
                     'nl-NL', or 'de-DE+fr-FR+...' for a joint multilingual run) and, for a
                     run that took its mask from another run, mask_source.train_langs
    mask/            the final mask; initial_mask/ for PARP / PARP-P
    outcome.json     dev scores and fine-tuning passes (finished runs)
    eval_<split>.json  scores on other splits (`sprune evaluate`)

From those it writes, as CSV + markdown + PNG (see `write_analysis`):

(a) pruning curves: error (or accuracy) against target sparsity per method and setting, the
    dense run as a line, with the fine-tuning passes each run spent (paper 001 Fig. 1, 3, 4),
    mean ± spread over the runs that differ only in their seed (`sprune.summary`), and the
    IOU of PARP's final mask with the MPI mask;
    when a joint multilingual run exists, its per-language scores next to the per-language
    runs' (Fig. 4 right);
(b) mask IOU matrices across settings at a sparsity, with an MPI row and an RP row (Fig. 2);
(c) cross-lingual mask transfer grids: relative error change of fine-tuning on target B with
    the mask from source A against the same-language mask (Fig. 7), per method (regular
    sub-fine-tuning = omp with mask_from, PARP = parp with mask_from), RP as the last row;
(e) IOU between PARP's final mask and its initial mask, per sparsity (Fig. 5).

The arithmetic is in pure functions (`iou_matrix`, `relative_change`, `transfer_grid`) that
the writers call and the tests check on hand-made numbers.
"""
from __future__ import annotations

import csv
import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from sprune.errors import UserError
from sprune.io import atomic_path, atomic_write_text
from sprune.prune.mask import MASK_FILE, Mask
from sprune.report import (DEFAULT_METRICS, METHOD_ORDER, langs_tag, line_styles,
                           lower_is_better, outside_legend)
from sprune.runs import read_run

HARD_MASK_METHODS = ("rp", "mpi", "omp")   # fine-tune a fixed subnetwork
PARP_METHODS = ("parp", "parp-p")


# ---- the arithmetic ------------------------------------------------------------------------

def iou_matrix(rows: Mapping[str, Mask], cols: Mapping[str, Mask]) -> list[list[float]]:
    """IOU of every row mask with every column mask: [len(rows)][len(cols)], in the
    mappings' order. Masks of the same model and scope (else a `UserError`)."""
    return [[rows[r].iou(cols[c]) for c in cols] for r in rows]


def relative_change(error: float, baseline: float) -> float:
    """(error - baseline) / baseline: +0.25 means 25 % more errors than the baseline.
    A zero baseline gives 0.0 when `error` is zero too, else +inf."""
    if baseline == 0:
        return 0.0 if error == 0 else math.inf
    return (error - baseline) / baseline


def transfer_grid(errors: Mapping[tuple[str, str], float], baselines: Mapping[str, float]
                  ) -> dict[tuple[str, str], float]:
    """Relative error change of each (source, target) transfer against the target's
    same-language baseline: {(A, B): relative_change(errors[A, B], baselines[B])}.
    Pairs whose target has no baseline are left out."""
    return {(src, tgt): relative_change(err, baselines[tgt])
            for (src, tgt), err in errors.items() if tgt in baselines}


# ---- run folders ---------------------------------------------------------------------------

@dataclass
class Run:
    """One run folder, finished or not."""

    name: str                     # path relative to the experiment folder
    folder: Path
    method: str
    target_sparsity: float
    train_langs: list[str]
    mask_source_langs: list[str] | None   # None: the run found its own mask
    outcome: dict[str, Any] | None
    evals: dict[str, dict[str, float]] = field(default_factory=dict)
    experiment: dict[str, Any] = field(default_factory=dict)   # experiment.json

    @property
    def setting(self) -> str:
        return langs_tag(self.train_langs) or "-"

    @property
    def seed(self) -> int | None:
        """The training seed (`train.seed` of the run's config; None when not recorded)."""
        seed = self.experiment.get("config", {}).get("train", {}).get("seed")
        return None if seed is None else int(seed)

    @property
    def source(self) -> str | None:
        return None if self.mask_source_langs is None else (langs_tag(self.mask_source_langs)
                                                            or "?")

    @property
    def sparsity_key(self) -> float:
        return round(self.target_sparsity, 4)

    def score(self, split: str, metric: str) -> float | None:
        if split in self.evals:
            return self.evals[split].get(metric)
        if split == "dev" and self.outcome is not None:
            return self.outcome.get("dev", {}).get(metric)
        return None

    @property
    def passes(self) -> float | None:
        return None if self.outcome is None else self.outcome.get("passes")

    def has_mask(self, name: str = "mask") -> bool:
        return (self.folder / name / MASK_FILE).is_file()

    def mask(self, name: str = "mask") -> Mask:
        return Mask.load(self.folder / name)


def load_runs(exp_dir: str | Path) -> list[Run]:
    """Every run folder (holding prune.json) under `exp_dir`, sorted by method, sparsity and
    name."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise UserError(f"{exp_dir} does not exist; give the experiment folder of a recipe")
    runs = []
    for prune_path in sorted(exp_dir.rglob("prune.json")):
        files = read_run(prune_path.parent)
        folder, prune, experiment = files.folder, files.prune or {}, files.experiment
        source = experiment.get("mask_source")
        method = str(prune.get("method", "?"))
        runs.append(Run(
            name=str(folder.relative_to(exp_dir)) if folder != exp_dir else folder.name,
            folder=folder, method=method,
            target_sparsity=0.0 if method == "dense" else float(prune.get("sparsity", 0.0)),
            train_langs=list(experiment.get("data", {}).get("train_langs", [])),
            mask_source_langs=list(source.get("train_langs", [])) if source else None,
            outcome=files.outcome, evals=files.evals, experiment=experiment))
    if not runs:
        raise UserError(f"{exp_dir}: no run folders (no */prune.json); run `sprune prune` "
                        "stages first")
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    runs.sort(key=lambda r: (order.get(r.method, len(order)), r.target_sparsity, r.name))
    return runs


def pick_split(runs: Sequence[Run], split: str | None) -> str:
    """`split`, else test when some run was evaluated on it, else dev."""
    if split:
        return split
    return "test" if any("test" in r.evals for r in runs) else "dev"


def pick_metric(runs: Sequence[Run], split: str, metric: str | None) -> str:
    reported = {k for r in runs for k in ([*r.evals.get(split, {})] if split in r.evals
                                          else [*(r.outcome or {}).get("dev", {})])}
    if metric:
        if metric not in reported:
            raise UserError(f"no run reports '{metric}' on {split} (they report "
                            f"{', '.join(sorted(reported)) or 'nothing yet'}); pick one with "
                            "--metric, or evaluate the runs first")
        return metric
    for name in DEFAULT_METRICS:
        if name in reported:
            return name
    overall = sorted(k for k in reported if "/" not in k)
    if not overall:
        raise UserError(f"no finished run has {split} scores; run the fine-tuning and "
                        "evaluation stages first")
    return overall[0]


# ---- tables and plots ----------------------------------------------------------------------

def _pct(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _md(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


def plot_heatmap(matrix: Sequence[Sequence[float | None]], row_labels: Sequence[str],
                 col_labels: Sequence[str], title: str, path: Path, signed: bool = False,
                 colorbar_label: str = "") -> None:
    """A labelled heatmap with each cell's value in % written on it; `signed` centres a
    diverging colour map at 0 (relative changes), else a sequential one (IOUs)."""
    import numpy as np

    plt = _pyplot()
    values = np.array([[np.nan if v is None or math.isinf(v) else v for v in row]
                       for row in matrix], dtype=float)
    fig, ax = plt.subplots(figsize=(2.0 + 0.9 * max(3, len(col_labels)),
                                    1.2 + 0.6 * max(3, len(row_labels))))
    finite = values[np.isfinite(values)]
    if signed:
        bound = float(np.abs(finite).max()) if finite.size and np.abs(finite).max() > 0 else 1.0
        image = ax.imshow(values, cmap="RdBu_r", vmin=-bound, vmax=bound)
    else:
        image = ax.imshow(values, cmap="viridis")
    low, high = image.get_clim()
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            shade = ((v - low) / (high - low) if v is not None and math.isfinite(v)
                     and high > low else 0.5)
            # viridis is light at the top; RdBu is light in the middle
            light = abs(shade - 0.5) < 0.3 if signed else shade > 0.6
            ax.text(j, i, _pct(v, signed), ha="center", va="center", fontsize=8,
                    color="black" if light else "white")
    ax.set_xticks(range(len(col_labels)), col_labels, rotation=45, ha="right")
    ax.set_yticks(range(len(row_labels)), row_labels)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=colorbar_label)
    fig.tight_layout()
    _save_figure(fig, path)


@dataclass
class Section:
    """A part of ANALYSIS.md: heading, text and the files it wrote."""

    title: str
    body: str


def _sparsities(runs: Iterable[Run]) -> list[float]:
    return sorted({r.sparsity_key for r in runs})


# (a) pruning curves, passes, joint vs per-language -------------------------------------------

def curve_runs(runs: Sequence[Run], split: str, metric: str) -> list[Run]:
    """Runs on the curves: own masks (no transfer) with a score."""
    return [r for r in runs if r.source is None and r.score(split, metric) is not None]


def write_curves(runs: Sequence[Run], out: Path, split: str, metric: str, lower: bool
                 ) -> Section:
    """(a): per setting, the curve table over seeds (`sprune.summary`: mean ± std, bold best,
    "(n.s.)", the spread note), the passes table, the plot and the PARP-vs-MPI mask IOU;
    curves.csv (every run) and results.csv (every cell, `sprune.summary.CSV_HEADER`)."""
    from sprune.summary import (CSV_HEADER, Key, csv_rows, curve_table, gather, iou_table,
                                plot_curves, spread_note)

    scored = curve_runs(runs, split, metric)
    header = ["setting", "method", "run", "target_sparsity", "achieved_sparsity", "split",
              "metric", "value", "passes", "seed"]
    _csv(out / "curves.csv", header, [
        [r.setting, r.method, r.name, r.target_sparsity,
         (r.outcome or {}).get("achieved_sparsity", ""), split, metric,
         r.score(split, metric), "" if r.passes is None else r.passes,
         "" if r.seed is None else r.seed] for r in scored])
    curves = gather(scored, split, metric, lower)
    _csv(out / "results.csv", CSV_HEADER, csv_rows(curves))
    if not scored:
        return Section("(a) Pruning curves", f"No finished run has a {split} {metric} yet.\n")
    body = [f"{split} {metric} in % ({'lower' if lower else 'higher'} is better) against the "
            "target sparsity; fine-tuning passes over the training set each run spent "
            "(Fig. 1). Data: [curves.csv](curves.csv) (every run), "
            "[results.csv](results.csv) (every cell over seeds).\n"]
    for setting, _ in curves.groups():
        sparsities = curves.sparsities(setting, "") or [0.0]
        pass_rows = []
        for m in curves.methods(setting, ""):
            cells = [curves.passes.get(Key(setting, "", m, 0.0 if m == "dense" else s))
                     for s in sparsities]
            pass_rows.append([m, *[f"{c.mean:.2f}" if c is not None else "-" for c in cells]])
        cols = ["method", *[f"{100 * s:g} %" for s in sparsities]]
        png = f"curves_{_slug(setting)}.png"
        plot_curves(curves, out / png, [(setting, "")], f"{setting}: {split} {metric}")
        iou = iou_table(curves, setting)
        body.append(f"### {setting}\n\n{split} {metric} %:\n\n"
                    f"{curve_table(curves, setting, '')}\n{spread_note(curves, setting)}\n\n"
                    f"fine-tuning passes:\n\n{_md(cols, pass_rows)}\n![curves]({png})\n"
                    + (f"\nIOU (%) of the final PARP / PARP-P mask with the MPI mask of the "
                       f"same seed and sparsity:\n\n{iou}" if iou else ""))
    joint = joint_rows(scored, split, metric)
    if joint:
        header = ["language", "method", "target_sparsity", "per-language run", "joint run"]
        _csv(out / "joint.csv", header, joint)
        body.append("### One joint multilingual subnetwork vs per-language subnetworks\n\n"
                    f"{split} {metric} % of each language: its own run vs the joint run "
                    "decoded on that language (Fig. 4 right). Data: [joint.csv](joint.csv).\n\n"
                    + _md(header, [[lang, m, f"{100 * s:.0f} %", _pct(own), _pct(shared)]
                                   for lang, m, s, own, shared in joint]))
    return Section("(a) Pruning curves and fine-tuning passes", "\n".join(body))


def joint_rows(runs: Sequence[Run], split: str, metric: str
               ) -> list[tuple[str, str, float, float | None, float | None]]:
    """(language, method, sparsity, per-language run's score, joint run's score on that
    language) for every joint (multi-language) run, from its `<metric>/<lang>` scores."""
    own = {(r.setting, r.method, r.sparsity_key, r.seed): r for r in runs
           if len(r.train_langs) == 1}
    rows = []
    for r in runs:
        if len(r.train_langs) < 2:
            continue
        for lang in r.train_langs:
            shared = r.score(split, f"{metric}/{lang}")
            mine = own.get((lang, r.method, r.sparsity_key, r.seed))
            rows.append((lang, r.method, r.sparsity_key,
                         mine.score(split, metric) if mine else None, shared))
    return rows


# (b) IOU matrices --------------------------------------------------------------------------

def _mask_runs(runs: Sequence[Run], method: str, sparsity: float) -> dict[str, Run]:
    """Setting -> run of `method` at `sparsity` with its own mask (first by name)."""
    chosen: dict[str, Run] = {}
    for r in runs:
        if (r.method == method and r.sparsity_key == sparsity and r.source is None
                and r.has_mask() and r.setting not in chosen):
            chosen[r.setting] = r
    return dict(sorted(chosen.items()))


def write_iou(runs: Sequence[Run], out: Path, method: str, sparsities: Sequence[float]
              ) -> Section:
    body = []
    for s in sparsities:
        columns = _mask_runs(runs, method, s)
        if not columns:
            body.append(f"No {method} mask at {100 * s:.0f} % sparsity.\n")
            continue
        col_masks = {k: r.mask() for k, r in columns.items()}
        row_masks = dict(col_masks)
        for extra in ("mpi", "rp"):
            if extra == method:
                continue
            candidates = _mask_runs(runs, extra, s)
            if candidates:
                # MPI and RP masks do not depend on the task: any setting's will do
                run = next(iter(candidates.values()))
                row_masks[extra.upper()] = run.mask()
        matrix = iou_matrix(row_masks, col_masks)
        labels = list(row_masks)
        stem = f"iou_{method}_s{s:.2f}"
        _csv(out / f"{stem}.csv", ["mask", *col_masks],
             [[label, *row] for label, row in zip(labels, matrix)])
        plot_heatmap(matrix, labels, list(col_masks),
                     f"IOU of {method} masks\nat {100 * s:.0f} % sparsity", out / f"{stem}.png",
                     colorbar_label="IOU (1 = 100 %)")
        body.append(f"### {100 * s:.0f} % sparsity\n\n"
                    + _md(["IOU %", *col_masks], [[label, *map(_pct, row)]
                                                  for label, row in zip(labels, matrix)])
                    + f"\n![IOU]({stem}.png) Data: [{stem}.csv]({stem}.csv)\n")
    return Section(f"(b) IOU of {method} masks across settings",
                   f"Intersection over union of the kept weights of the {method} masks of "
                   "each setting (columns) with each other and, in the last rows, with the "
                   "MPI and RP masks at the same sparsity (Fig. 2).\n\n" + "\n".join(body))


# (c) cross-lingual mask transfer -------------------------------------------------------------

def mean_scores(runs: Iterable[Run], key: Callable[[Run], Any], split: str, metric: str
                ) -> dict[Any, float]:
    """key(run) -> mean score of the runs with that key (the seeds of one cell), over the
    runs with a `split` `metric` score."""
    found: dict[Any, list[float]] = {}
    for r in runs:
        value = r.score(split, metric)
        if value is not None:
            found.setdefault(key(r), []).append(value)
    return {k: sum(v) / len(v) for k, v in found.items()}


def transfer_baselines(runs: Sequence[Run], method: str, sparsity: float, split: str,
                       metric: str) -> dict[str, float]:
    """Target setting -> same-language error (mean over seeds): the runs of `method` whose
    mask came from the target's own setting, else the target's own `method` runs (for rp /
    mpi / omp the same procedure as a same-language transfer)."""
    cell = [r for r in runs if r.method == method and r.sparsity_key == sparsity]
    baselines = mean_scores((r for r in cell if r.source == r.setting), lambda r: r.setting,
                            split, metric)
    own = mean_scores((r for r in cell if r.source is None), lambda r: r.setting, split, metric)
    return {**own, **baselines}


def write_transfer(runs: Sequence[Run], out: Path, split: str, metric: str) -> Section:
    transfers = [r for r in runs if r.source is not None and r.score(split, metric) is not None]
    if not transfers:
        return Section("(c) Cross-lingual mask transfer",
                       "No finished run took its mask from another run (`--mask-from`).\n")
    body = []
    for method, s in sorted({(r.method, r.sparsity_key) for r in transfers},
                            key=lambda k: (METHOD_ORDER.index(k[0]) if k[0] in METHOD_ORDER
                                           else 99, k[1])):
        group = [r for r in transfers if r.method == method and r.sparsity_key == s]
        errors = mean_scores(group, lambda r: (r.source, r.setting), split, metric)
        baselines = transfer_baselines(runs, method, s, split, metric)
        langs = sorted({lang for pair in errors for lang in pair})
        for lang in langs:     # the diagonal is the same-language baseline itself
            if lang in baselines:
                errors.setdefault((lang, lang), baselines[lang])
        grid = transfer_grid(errors, baselines)
        sources = targets = langs
        matrix = [[grid.get((src, tgt)) for tgt in targets] for src in sources]
        labels = list(sources)
        rp = mean_scores((r for r in runs if r.method == "rp" and r.sparsity_key == s
                          and r.source is None), lambda r: r.setting, split, metric)
        if rp:
            labels.append("RP")
            matrix.append([relative_change(rp[t], baselines[t]) if t in rp and t in baselines
                           else None for t in targets])
        stem = f"transfer_{method}_s{s:.2f}"
        _csv(out / f"{stem}.csv", ["source \\ target", *targets],
             [[label, *["" if v is None else v for v in row]]
              for label, row in zip(labels, matrix)])
        raw = [[_pct(errors.get((src, tgt))) for tgt in targets] for src in sources]
        plot_heatmap(matrix, labels, targets,
                     f"{method} at {100 * s:.0f} %:\nrelative {metric} change vs same language",
                     out / f"{stem}.png", signed=True,
                     colorbar_label=f"relative {metric} change (1 = +100 %)")
        missing = [t for t in targets if t not in baselines]
        note = (f" No same-language baseline for {', '.join(missing)}: run {method} there "
                "too." if missing else "")
        body.append(f"### {method}, {100 * s:.0f} % sparsity\n\nRelative {metric} change % "
                    f"(rows: mask source, columns: fine-tuned on).{note}\n\n"
                    + _md(["source \\ target", *targets],
                          [[label, *[_pct(v, signed=True) for v in row]]
                           for label, row in zip(labels, matrix)])
                    + f"\n{split} {metric} % of the transfer runs:\n\n"
                    + _md(["source \\ target", *targets],
                          [[src, *row] for src, row in zip(sources, raw)])
                    + f"\n![transfer]({stem}.png) Data: [{stem}.csv]({stem}.csv)\n")
    return Section("(c) Cross-lingual mask transfer",
                   "Each cell: (error with the mask from the row's language, fine-tuned on the "
                   "column's) / (error with the column's own mask) - 1; negative is better. "
                   "omp = regular sub-fine-tuning of the given mask, parp = PARP started from "
                   "it (Fig. 7); the RP row is random pruning on the target. Errors are "
                   "means over the seeds of a cell.\n\n"
                   + "\n".join(body))


# (e) PARP's final vs initial mask --------------------------------------------------------------

def parp_initial_iou(runs: Sequence[Run]) -> list[tuple[Run, float, float]]:
    """(run, initial sparsity, IOU of the final mask with the initial mask) for every PARP /
    PARP-P run that saved both masks."""
    rows = []
    for r in runs:
        if r.method in PARP_METHODS and r.has_mask() and r.has_mask("initial_mask"):
            initial = r.mask("initial_mask")
            rows.append((r, initial.sparsity(), r.mask().iou(initial)))
    return rows


def write_parp_iou(runs: Sequence[Run], out: Path) -> Section:
    rows = parp_initial_iou(runs)
    if not rows:
        return Section("(e) PARP: final vs initial subnetwork",
                       "No finished PARP / PARP-P run (with mask/ and initial_mask/).\n")
    header = ["setting", "method", "run", "initial mask", "target_sparsity",
              "initial_sparsity", "iou"]
    table = [[r.setting, r.method, r.name, f"from {r.source}" if r.source else "MPI",
              r.target_sparsity, init, iou] for r, init, iou in rows]
    _csv(out / "parp_initial_iou.csv", header, table)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    lines: dict[str, list[tuple[float, float]]] = {}
    for r, _, iou in rows:
        if r.source is None:
            lines.setdefault(f"{r.method} {r.setting}", []).append((100 * r.target_sparsity,
                                                                    100 * iou))
    styles = line_styles()
    for label, points in sorted(lines.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], label=label, **next(styles))
    ax.set_xlabel("target sparsity (%)")
    ax.set_ylabel("IOU of final and initial mask (%)")
    ax.grid(alpha=0.3)
    if lines:
        outside_legend(ax)
    fig.tight_layout()
    _save_figure(fig, out / "parp_initial_iou.png")
    return Section("(e) PARP: final vs initial subnetwork",
                   "IOU between the mask PARP / PARP-P ends with and the one it started from "
                   "(MPI unless the run took a mask from another run), per target sparsity "
                   "(Fig. 5).\n\n"
                   + _md(["setting", "method", "run", "initial mask", "target %", "initial %",
                          "IOU %"],
                         [[a, b, c, d, f"{100 * e:.0f}", f"{100 * f:.1f}", f"{100 * g:.3f}"]
                          for a, b, c, d, e, f, g in table])
                   + "\n![PARP IOU](parp_initial_iou.png) Data: "
                     "[parp_initial_iou.csv](parp_initial_iou.csv)\n")


def write_pathways(runs: Sequence[Run], out: Path) -> Section | None:
    """(f) For every finished `pathways` run: the IOU between its language pathways and the
    share of the scope's weights used by 0, 1, ..., all languages (paper 003); None when
    there is no such run."""
    from sprune.prune.pathway_stats import (pairwise_iou, plot_pathway_iou,
                                            plot_sharing_histogram, sharing_histogram)

    found = [r for r in runs if r.method == "pathways" and (r.folder / "pathways").is_dir()]
    if not found:
        return None
    parts = []
    rows = []
    for r in found:
        masks = {p.name: Mask.load(p) for p in sorted((r.folder / "pathways").iterdir())}
        slug = _slug(r.name)
        plot_pathway_iou(masks, out / f"pathways_iou_{slug}.png", title=f"{r.name}: IOU")
        plot_sharing_histogram(masks, out / f"pathways_sharing_{slug}.png",
                               title=f"{r.name}: weights used by k languages")
        shares = sharing_histogram(masks)
        for (a, b), iou in pairwise_iou(masks).items():
            rows.append([r.name, f"{a}|{b}", iou, *shares])
        parts.append(f"**{r.name}** ({len(masks)} languages): used by 0..{len(masks)} "
                     "languages: " + ", ".join(f"{100 * v:.1f} %" for v in shares)
                     + f"\n\n![IOU](pathways_iou_{slug}.png) "
                       f"![sharing](pathways_sharing_{slug}.png)\n")
    width = max(len(row) for row in rows) - 3
    _csv(out / "pathways.csv", ["run", "pair", "iou", *[f"used_by_{k}" for k in range(width)]],
         [row + [""] * (width + 3 - len(row)) for row in rows])
    return Section("(f) Language pathways",
                   "IOU between the language pathways of each pathways run and the share of "
                   "weights used by k languages (paper 003). Data: [pathways.csv](pathways.csv)"
                   "\n\n" + "\n".join(parts))


# ---- everything ----------------------------------------------------------------------------

def write_analysis(exp_dir: str | Path, out_dir: str | Path | None = None,
                   metric: str | None = None, split: str | None = None,
                   iou_method: str = "omp", iou_sparsities: Sequence[float] | None = None,
                   lower: bool | None = None, title: str | None = None) -> Path:
    """Write (a), (b), (c), (e) and ANALYSIS.md into `out_dir` (default <exp_dir>/analysis);
    returns the ANALYSIS.md path.

    metric / split: default the first of accuracy, per, wer, cer the runs report, on test
    when evaluated else dev. iou_sparsities: default every sparsity with an `iou_method` mask.
    """
    exp_dir = Path(exp_dir)
    out = Path(out_dir) if out_dir is not None else exp_dir / "analysis"
    _analyse(exp_dir, out, title, metric=metric, split=split, iou_method=iou_method,
             iou_sparsities=iou_sparsities, lower=lower)
    return out / "ANALYSIS.md"


def _analyse(exp_dir: Path, out: Path, title: str | None, **options: Any
             ) -> tuple[str, list[Section]]:
    """Write `out`'s CSV, PNG and ANALYSIS.md for `exp_dir`; return ANALYSIS.md's intro line
    and sections (for a report that holds them too)."""
    runs = load_runs(exp_dir)
    sections = analysis_sections(runs, out, **options)
    intro = f"{len(runs)} runs under {exp_dir}."
    atomic_write_text(out / "ANALYSIS.md",
                      render_analysis(f"{title or exp_dir.name}: analysis", intro, sections))
    return intro, sections


def analysis_sections(runs: Sequence[Run], out: Path, metric: str | None = None,
                      split: str | None = None, iou_method: str = "omp",
                      iou_sparsities: Sequence[float] | None = None,
                      lower: bool | None = None) -> list[Section]:
    """Write the CSV and PNG files of (a), (b), (c), (e) and (f) into `out`; return their sections
    (options as in `write_analysis`)."""
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    finished = [r for r in runs if r.outcome is not None]
    if finished:
        split = pick_split(finished, split)
        metric = pick_metric(finished, split, metric)
        lower = lower_is_better(metric) if lower is None else lower
        sections.append(write_curves(runs, out, split, metric, lower))
    else:
        sections.append(Section("(a) Pruning curves", "No finished run yet.\n"))
    if iou_sparsities is None:
        iou_sparsities = _sparsities(r for r in runs if r.method == iou_method and r.has_mask()
                                     and r.source is None)
    else:
        iou_sparsities = [round(float(s), 4) for s in iou_sparsities]
    sections.append(write_iou(runs, out, iou_method, iou_sparsities) if iou_sparsities else
                    Section(f"(b) IOU of {iou_method} masks", f"No {iou_method} masks.\n"))
    if finished:
        sections.append(write_transfer(runs, out, split, metric))
    sections.append(write_parp_iou(runs, out))
    pathways = write_pathways(runs, out)
    if pathways is not None:
        sections.append(pathways)
    return sections


def render_analysis(title: str, intro: str, sections: Sequence[Section], level: int = 1,
                    link_prefix: str = "") -> str:
    """Markdown of one analysis: `title` at heading `level`, its sections one level down.
    link_prefix is put before the links to the analysis' own files (CSV, PNG), for a report
    that lives in another folder."""
    # section bodies hold their own headings, written for level 1: they move down with it
    deeper = "#" * (level - 1)
    text = f"{'#' * level} {title}\n\n{intro}\n\n"
    text += "\n".join(f"{'#' * (level + 1)} {s.title}\n\n"
                       + re.sub(r"^(#+) ", rf"{deeper}\1 ", s.body, flags=re.M)
                       for s in sections)
    if link_prefix:
        # the sections link their files by bare name: [text](curves.csv)
        text = re.sub(r"\]\(([\w.-]+\.(?:png|csv))\)", lambda m: f"]({link_prefix}{m.group(1)})",
                      text)
    return text


def write_report(exp_dirs: Sequence[str | Path], report: str | Path, title: str,
                 note: str = "", **options: Any) -> Path:
    """Analyse each experiment folder into <exp_dir>/analysis/ (its files and ANALYSIS.md, as
    `write_analysis` with `options`) and write one markdown `report` holding every analysis
    one heading level down, its links relative to the report's folder (e.g. exp/RESULTS.md
    over exp/<upstream>/), and results.csv beside it: the cells of every analysis, each
    setting named <exp_dir name>/<setting> (e.g. tiny_hubert_en/en-US)."""
    report = Path(report)
    header = f"# {title}\n\n" + (f"{note}\n\n" if note else "")
    parts = []
    cells: list[list[str]] = []
    for exp_dir in map(Path, exp_dirs):
        out = exp_dir / "analysis"
        intro, sections = _analyse(exp_dir, out, None, **options)
        prefix = Path(os.path.relpath(out.resolve(), report.parent.resolve())).as_posix() + "/"
        parts.append(render_analysis(exp_dir.name, intro, sections, level=2, link_prefix=prefix))
        if (out / "results.csv").is_file():
            rows = list(csv.reader(io.StringIO((out / "results.csv").read_text())))
            cells += [[f"{exp_dir.name}/{row[0]}", *row[1:]] for row in rows[1:]]
    from sprune.summary import CSV_HEADER

    _csv(report.parent / "results.csv", CSV_HEADER, cells)
    atomic_write_text(report, header + "\n".join(parts))
    return report
