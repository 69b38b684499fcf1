"""RESULTS.md of a pathways study (paper 003): error rate per language of each method and
sparsity, mean and spread over seeds, and the plots of the masks.

Layout read (what `egs/TEMPLATE/asr1/pathways.sh` writes):

    EXP/dense/                           the dense multilingual model (eval_<test>.json)
    EXP/seed<k>/s<S>/<method>/<lang>/    a monolingual run (IMP, adaptive) of one language,
                                         evaluated on that language's test set
    EXP/seed<k>/s<S>/<method>/           a multilingual pathways run, evaluated through each
                                         language's pathway (`<metric>/<lang>`)

A cell is mean ± standard deviation over the seeds (sample standard deviation, n - 1; a
single seed shows no spread). Against the first method of the table (the baseline, IMP by
default) a difference of means smaller than the larger of the two standard deviations is
marked "(n.s.)": not significant at this number of seeds. Plots: error vs sparsity per method
(mean with min-max bars), and for the highest sparsity of the first seed: the IOU between the
pathways of each pathways run and the share of weights used by 0..L languages, and the drift
(IOU of consecutive masks) of every adaptive and dynamic run.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Sequence

from sprune.errors import UserError
from sprune.io import atomic_write_text
from sprune.spread import Cell, marked

SEED_DIR = re.compile(r"^seed(\d+)$")
SPARSITY_DIR = re.compile(r"^s(\d+(?:\.\d+)?)$")


def _metric_of(doc: dict, metric: str, language: str) -> float | None:
    for key in (f"{metric}/{language}", metric):
        if key in doc:
            return float(doc[key])
    return None


def collect(exp: Path, metric: str, test: str
            ) -> tuple[dict[tuple[str, float, str], list[float]], list[str], list[str]]:
    """{(method, sparsity, language): [value per seed]}, the methods in folder order of
    appearance, and the languages."""
    table: dict[tuple[str, float, str], list[float]] = {}
    methods: list[str] = []
    languages: set[str] = set()
    seeds = sorted((p for p in exp.iterdir() if p.is_dir() and SEED_DIR.match(p.name)),
                   key=lambda p: int(SEED_DIR.match(p.name).group(1)))
    for seed in seeds:
        for level in sorted(p for p in seed.iterdir() if p.is_dir() and SPARSITY_DIR.match(p.name)):
            sparsity = float(SPARSITY_DIR.match(level.name).group(1))
            for method_dir in sorted(p for p in level.iterdir() if p.is_dir()):
                results = _results(method_dir, metric, test)
                if results and method_dir.name not in methods:
                    methods.append(method_dir.name)
                for language, value in results.items():
                    languages.add(language)
                    table.setdefault((method_dir.name, sparsity, language), []).append(value)
    return table, methods, sorted(languages)


def _results(method_dir: Path, metric: str, test: str) -> dict[str, float]:
    """language -> value of one method folder (a multilingual run, or one run per language)."""
    own = method_dir / f"eval_{test}.json"
    if own.is_file():
        doc = json.loads(own.read_text())
        prefix = f"{metric}/"
        return {k[len(prefix):]: float(v) for k, v in doc.items() if k.startswith(prefix)}
    found = {}
    for run in sorted(p for p in method_dir.iterdir() if p.is_dir()):
        result = run / f"eval_{test}.json"
        if result.is_file():
            value = _metric_of(json.loads(result.read_text()), metric, run.name)
            if value is not None:
                found[run.name] = value
    return found


def write_report(exp: Path, metric: str = "cer", test: str = "test", title: str | None = None,
                 baseline: str | None = None, order: Sequence[str] = ()) -> Path:
    """EXP/RESULTS.md, EXP/results.csv and EXP/*.png; returns the RESULTS.md path."""
    exp = Path(exp)
    table, methods, languages = collect(exp, metric, test)
    if not table:
        raise UserError(f"{exp}: no finished runs with eval_{test}.json under seed*/s*/; run "
                        "the recipe's training stages first")
    methods = [m for m in order if m in methods] + [m for m in methods if m not in order]
    baseline = baseline if baseline in methods else methods[0]
    sparsities = sorted({s for (_, s, _) in table})
    seeds = max(len(v) for v in table.values())
    name = metric.upper()
    lines = [f"# {title or 'Pathways study'}", "",
             f"{name} % on `{test}` per language (mean ± standard deviation over {seeds} "
             f"seed(s)); `avg` is the mean over languages of each seed. \"(n.s.)\": the "
             f"difference to `{baseline}` is smaller than the larger standard deviation of the "
             "two. Lower is better.", ""]
    dense = exp / "dense" / f"eval_{test}.json"
    if dense.is_file():
        lines += ["Dense multilingual model: " + _per_language(dense, metric, languages)]
        greedy = exp / "dense" / f"eval_{test}_greedy.json"
        if greedy.is_file():
            lines[-1] += f" (greedy decoding: {_per_language(greedy, metric, languages)})"
        lines += [""]
    lines += _decoding_note(exp / "dense" / "decode_unitlm" / "result.json")
    header = ["method", "sparsity", *languages, "avg"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    rows = []
    for sparsity in sparsities:
        base_cells = _cells(table, baseline, sparsity, languages)
        for method in methods:
            cells = _cells(table, method, sparsity, languages)
            if not cells:
                continue
            texts = []
            for key in [*languages, "avg"]:
                cell = cells.get(key)
                if cell is None:
                    texts.append("")
                    continue
                texts.append(marked(cell, None if method == baseline
                                    else base_cells.get(key)))
            lines.append(f"| {method} | {sparsity:g} | " + " | ".join(texts) + " |")
            rows.append([method, sparsity, *[
                cells[k].mean if k in cells else "" for k in [*languages, "avg"]], *[
                cells[k].std if k in cells else "" for k in [*languages, "avg"]]])
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "sparsity", *[f"{k}_mean" for k in [*languages, "avg"]],
                     *[f"{k}_std" for k in [*languages, "avg"]]])
    writer.writerows(rows)
    atomic_write_text(exp / "results.csv", buffer.getvalue())
    plots = _plots(exp, table, methods, sparsities, languages, metric)
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    atomic_write_text(exp / "RESULTS.md", "\n".join(lines) + "\n")
    return exp / "RESULTS.md"


def _per_language(path: Path, metric: str, languages: list[str]) -> str:
    doc = json.loads(path.read_text())
    values = [_metric_of(doc, metric, lang) for lang in languages]
    return ", ".join(f"{lang} {100 * v:.1f}" for lang, v in zip(languages, values)
                     if v is not None)


def _decoding_note(tuned: Path) -> list[str]:
    """What every run was decoded with, when the recipe tuned a unit n-gram on the dense
    model (`pathways.sh --unit-lm-order`, `sprune decode --name unitlm`)."""
    if not tuned.is_file():
        return []
    doc = json.loads(tuned.read_text())
    tokens = f", {doc['beam_tokens']} units per frame" if doc.get("beam_tokens") else ""
    return [f"Decoding: flashlight beam search (beam {doc['beam']}{tokens}) with the n-gram "
            f"over the units `{Path(doc['kenlm']).name}` at weight {doc['lm_weight']:g}, chosen on "
            f"`{Path(doc['dev']).name}` {doc.get('tune_on', 'wer').upper()} with the dense "
            "model from " + ", ".join(f"{row['lm_weight']:g}" for row in doc["tuning"])
            + "; every run is evaluated with the same search.", ""]


def _cells(table, method: str, sparsity: float, languages: list[str]) -> dict[str, Cell]:
    cells = {lang: Cell(tuple(table[(method, sparsity, lang)])) for lang in languages
             if (method, sparsity, lang) in table}
    per_seed = [table.get((method, sparsity, lang), []) for lang in languages]
    if per_seed and all(per_seed) and len({len(v) for v in per_seed}) == 1:
        cells["avg"] = Cell(tuple(sum(v[i] for v in per_seed) / len(per_seed)
                                  for i in range(len(per_seed[0]))))
    return cells


def _plots(exp: Path, table, methods, sparsities, languages, metric) -> list[Path]:
    from sprune.analysis import _pyplot, _save_figure
    from sprune.prune.mask import Mask
    from sprune.prune.pathway_stats import (plot_mask_drift, plot_pathway_iou,
                                            plot_sharing_histogram)

    written = []
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for method in methods:
        xs, means, lows, highs = [], [], [], []
        for sparsity in sparsities:
            cell = _cells(table, method, sparsity, languages).get("avg")
            if cell is not None:
                xs.append(sparsity)
                means.append(100 * cell.mean)
                lows.append(100 * (cell.mean - min(cell.values)))
                highs.append(100 * (max(cell.values) - cell.mean))
        if xs:
            axis.errorbar(xs, means, yerr=[lows, highs], marker="o", capsize=3, label=method)
    axis.set_xlabel("sparsity")
    axis.set_ylabel(f"{metric.upper()} % (mean over languages; bars: min-max over seeds)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    path = exp / f"{metric}_vs_sparsity.png"
    _save_figure(figure, path)
    written.append(path)

    seed_dirs = [p for p in exp.iterdir() if p.is_dir() and SEED_DIR.match(p.name)]
    if not seed_dirs:
        return written
    first = min(seed_dirs, key=lambda p: int(SEED_DIR.match(p.name).group(1)))
    top = first / f"s{max(sparsities):g}"
    drifts = {}
    for method_dir in sorted(p for p in top.iterdir() if p.is_dir()) if top.is_dir() else []:
        pathways = method_dir / "pathways"
        if pathways.is_dir():
            masks = {p.name: Mask.load(p) for p in sorted(pathways.iterdir())}
            for plot, stem in ((plot_pathway_iou, "iou"), (plot_sharing_histogram, "sharing")):
                path = exp / f"{stem}_{method_dir.name}_s{max(sparsities):g}.png"
                plot(masks, path, title=f"{method_dir.name}, sparsity {max(sparsities):g}")
                written.append(path)
        for rounds in sorted(method_dir.glob("**/rounds")):
            steps = sorted(p for p in rounds.iterdir() if p.is_dir())
            label = str(rounds.parent.relative_to(top))
            if (rounds.parent / "pathways").is_dir():   # one series per language
                for lang in sorted(p.name for p in steps[0].iterdir()):
                    drifts[f"{label} {lang}"] = [Mask.load(s / lang) for s in steps]
            else:
                drifts[label] = [Mask.load(s) for s in steps]
    drifts = {k: v for k, v in drifts.items() if len(v) > 1}
    if drifts:
        path = exp / f"mask_drift_s{max(sparsities):g}.png"
        plot_mask_drift(drifts, path, title=f"mask drift, sparsity {max(sparsities):g}")
        written.append(path)
    return written
