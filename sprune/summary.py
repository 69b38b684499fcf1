"""Pruning curves over seeds: the runs of an experiment folder gathered into cells of mean ±
spread, the PARP-vs-MPI mask IOU, and their table, CSV rows, notes and plot.

A cell is one (setting, mask source, method, target sparsity): the runs that differ only in
their training seed (`train.seed`; the recipes' `--seeds` put them in seed<N>/ folders). The
curve table has a row per method and a column per sparsity; the best pruned cell of a column
is bold and a cell whose difference to it is smaller than the spread is marked "(n.s.)"
(`sprune.spread`: the larger standard deviation of the two with two seeds or more, else the
test-set noise floor of the setting). Used by `sprune results` (RESULTS.md, results.csv,
<metric>_vs_sparsity.png) and by `sprune analyze` (its section (a)).

results.csv has one row per quantity of a cell, long format (`CSV_HEADER`):
quantity = the metric (accuracy, cer, ...), `passes` (fine-tuning passes) or `iou_mpi`
(IOU of the run's final mask with the MPI mask of the same seed and sparsity, PARP and
PARP-P), with n, the seeds, mean, std, min, max, the noise floor of the setting and the mark.
`sprune fidelity` reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from sprune.report import METHOD_ORDER, line_styles, markdown_table, outside_legend
from sprune.spread import Cell, marked, noise_floor, not_significant

if TYPE_CHECKING:
    from sprune.analysis import Run

PARP_METHODS = ("parp", "parp-p")
CSV_HEADER = ["setting", "mask_from", "method", "target_sparsity", "quantity", "split", "better",
              "n", "seeds", "mean", "std", "min", "max", "noise_floor", "mark"]


@dataclass(frozen=True, order=True)
class Key:
    """One cell's place: the runs that differ only in their seed."""

    setting: str
    source: str            # "" for runs with their own mask
    method: str
    sparsity: float        # target sparsity, rounded to 4 digits; 0.0 for dense


@dataclass
class Floor:
    """The noise floor of one setting with a single seed: `noise_floor(p, n)`."""

    value: float
    p: float               # the score it was computed at (dense, else the mean cell)
    n: int                 # test utterances


@dataclass
class Curves:
    """Every cell of an experiment on one split and metric."""

    split: str
    metric: str
    lower: bool
    scores: dict[Key, Cell] = field(default_factory=dict)
    seeds: dict[Key, list[int | None]] = field(default_factory=dict)
    passes: dict[Key, Cell] = field(default_factory=dict)
    iou_mpi: dict[Key, Cell] = field(default_factory=dict)
    floors: dict[str, Floor] = field(default_factory=dict)     # setting -> floor
    chance: dict[str, float] = field(default_factory=dict)     # setting -> 1 / classes
    test_sizes: dict[str, int] = field(default_factory=dict)

    def groups(self) -> list[tuple[str, str]]:
        """(setting, source) of every table, sorted."""
        return sorted({(k.setting, k.source) for k in self.scores})

    def methods(self, setting: str, source: str) -> list[str]:
        found = {k.method for k in self.scores if (k.setting, k.source) == (setting, source)}
        return [m for m in METHOD_ORDER if m in found] + sorted(found - set(METHOD_ORDER))

    def sparsities(self, setting: str, source: str) -> list[float]:
        return sorted({k.sparsity for k in self.scores if (k.setting, k.source) ==
                       (setting, source) and k.method != "dense"})

    def dense(self, setting: str) -> Cell | None:
        return self.scores.get(Key(setting, "", "dense", 0.0))

    def best(self, setting: str, source: str, sparsity: float) -> Key | None:
        """The pruned cell with the best mean at this sparsity (None: no pruned cell)."""
        keys = [k for k in self.scores if (k.setting, k.source, k.sparsity) ==
                (setting, source, sparsity) and k.method != "dense"]
        if not keys:
            return None
        sign = -1.0 if self.lower else 1.0
        # ties: the first method in METHOD_ORDER
        return max(keys, key=lambda k: (sign * self.scores[k].mean, -_order(k.method)))

    def floor(self, setting: str) -> float | None:
        found = self.floors.get(setting)
        return None if found is None else found.value

    def max_seeds(self) -> int:
        return max((c.n for c in self.scores.values()), default=0)


def _order(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def run_key(run: Run) -> Key:
    return Key(run.setting, run.source or "", run.method, run.sparsity_key)


def gather(runs: Sequence[Run], split: str, metric: str, lower: bool,
           test_data: str | Path | None = None) -> Curves:
    """The cells of the finished runs with a `split` `metric` score (see the module doc)."""
    curves = Curves(split, metric, lower)
    values: dict[Key, list[float]] = {}
    passes: dict[Key, list[float]] = {}
    scored = [r for r in runs if r.outcome is not None and r.score(split, metric) is not None]
    for r in sorted(scored, key=lambda r: (r.seed is None, r.seed or 0, r.name)):
        key = run_key(r)
        values.setdefault(key, []).append(float(r.score(split, metric)))
        curves.seeds.setdefault(key, []).append(r.seed)
        if r.passes is not None:
            passes.setdefault(key, []).append(float(r.passes))
    curves.scores = {k: Cell(tuple(v)) for k, v in values.items()}
    curves.passes = {k: Cell(tuple(v)) for k, v in passes.items()}
    curves.iou_mpi = {k: Cell(tuple(v)) for k, v in parp_mpi_iou(runs).items()}
    for r in scored:
        intents = r.experiment.get("intents")
        if intents:
            curves.chance.setdefault(r.setting, 1.0 / len(intents))
        size = count_utterances(r, split, test_data)
        if size is not None:
            curves.test_sizes.setdefault(r.setting, size)
    for setting, n in curves.test_sizes.items():
        dense = curves.dense(setting)
        cells = [c for k, c in curves.scores.items() if k.setting == setting]
        p = dense.mean if dense is not None else sum(c.mean for c in cells) / len(cells)
        curves.floors[setting] = Floor(noise_floor(p, n), p, n)
    return curves


def count_utterances(run: Run, split: str, test_data: str | Path | None = None) -> int | None:
    """Utterances of the data dir a run was scored on: `test_data`, else the folder named
    `split` beside the run's dev dir (data/dev -> data/test), as seen from the current folder;
    None when it is not there."""
    if test_data is not None:
        folder = Path(test_data)
    else:
        dev = run.experiment.get("data", {}).get("dev")
        if not dev:
            return None
        folder = Path(dev).parent / split
    utt2spk = folder / "utt2spk"
    if not utt2spk.is_file():
        return None
    return sum(1 for line in utt2spk.read_text().splitlines() if line.strip())


def parp_mpi_iou(runs: Sequence[Run]) -> dict[Key, list[float]]:
    """IOU of each PARP / PARP-P run's final mask with the MPI run's mask of the same
    setting, target sparsity and seed (own masks only), by cell."""
    mpi = {(r.setting, r.sparsity_key, r.seed): r for r in runs
           if r.method == "mpi" and r.source is None and r.has_mask()}
    found: dict[Key, list[float]] = {}
    for r in sorted(runs, key=lambda r: (r.seed is None, r.seed or 0, r.name)):
        other = mpi.get((r.setting, r.sparsity_key, r.seed))
        if r.method in PARP_METHODS and r.source is None and r.has_mask() and other is not None:
            found.setdefault(run_key(r), []).append(r.mask().iou(other.mask()))
    return found


# ---- text ----------------------------------------------------------------------------------

def _seeds_text(seeds: Iterable[int | None]) -> str:
    """'1 2 3'; '' when no run recorded its seed."""
    return " ".join(map(str, sorted({s for s in seeds if s is not None})))


def curve_table(curves: Curves, setting: str, source: str) -> str:
    """Markdown: a row per method, a column per target sparsity, mean ± std (bold: the best
    pruned cell of the column; (n.s.): not significantly different from it); dense's one
    cell is repeated in every column."""
    sparsities = curves.sparsities(setting, source) or [0.0]
    floor = curves.floor(setting)
    rows = []
    for method in curves.methods(setting, source):
        row = [method]
        for s in sparsities:
            key = Key(setting, source, method, 0.0 if method == "dense" else s)
            cell = curves.scores.get(key)
            if cell is None:
                row.append("-")
                continue
            if method == "dense":
                row.append(cell.text())
                continue
            best = curves.best(setting, source, s)
            if key == best:
                row.append(f"**{cell.text()}**")
            else:
                row.append(marked(cell, curves.scores[best], floor))
        rows.append(row)
    header = ["method", *[f"{100 * s:g} %" for s in sparsities]]
    return markdown_table(header, rows)


def spread_note(curves: Curves, setting: str) -> str:
    """What the marks of a setting's table mean: the spread over seeds, or with one seed
    the test-set noise floor and how it was derived."""
    keys = [k for k in curves.scores if k.setting == setting]
    n = max(curves.scores[k].n for k in keys)
    seeds = _seeds_text(s for k in keys for s in curves.seeds[k])
    seeds = f" ({seeds})" if seeds else ""
    best = "Bold: the best pruned method at each sparsity. "
    if n > 1:
        return (best + f"Mean ± sample standard deviation over {n} seeds{seeds}; \"(n.s.)\": "
                "the difference to the bold cell is smaller than the larger standard deviation "
                "of the two (not significant at this number of seeds).")
    floor = curves.floors.get(setting)
    if floor is None:
        return (best + f"1 seed{seeds}: no spread, and the number of test utterances is "
                "unknown (give the test data dir with --test-data), so differences cannot be "
                "judged; run with --seeds \"1 2 3\" to measure the spread.")
    return (best + f"1 seed{seeds}: no spread; differences under "
            f"{100 * floor.value:.1f} points are noise (\"(n.s.)\" against the bold cell). "
            f"That is test-set sampling alone: 1.96 · sqrt(p (1 - p) / N), the 95 % half-width "
            f"of a score p = {100 * floor.p:.1f} % (the dense {curves.split} {curves.metric}) "
            f"averaged over N = {floor.n} {curves.split} utterances; seed-to-seed training "
            "noise comes on top: run with --seeds \"1 2 3\" to measure it.")


def iou_table(curves: Curves, setting: str) -> str | None:
    """Markdown: IOU (%) of PARP's / PARP-P's final mask with the MPI mask per sparsity;
    None when no run has both."""
    keys = sorted(k for k in curves.iou_mpi if k.setting == setting)
    if not keys:
        return None
    sparsities = sorted({k.sparsity for k in keys})
    rows = []
    for method in [m for m in PARP_METHODS if any(k.method == m for k in keys)]:
        rows.append([f"{method} vs mpi", *[
            curves.iou_mpi[Key(setting, "", method, s)].text()
            if Key(setting, "", method, s) in curves.iou_mpi else "-" for s in sparsities]])
    return markdown_table(["IOU %", *[f"{100 * s:g} %" for s in sparsities]], rows)


def chance_text(curves: Curves, setting: str) -> str:
    chance = curves.chance.get(setting)
    if chance is None:
        return ""
    return (f"Chance: {100 * chance:.1f} % (1 / {round(1 / chance)} intents of the training "
            "set).")


# ---- CSV -----------------------------------------------------------------------------------

def csv_rows(curves: Curves) -> list[list[Any]]:
    """results.csv rows (`CSV_HEADER`) of every cell: the metric, passes and iou_mpi."""
    rows = []
    better = "lower" if curves.lower else "higher"
    for key in sorted(curves.scores):
        cell = curves.scores[key]
        mark = ""
        if key.method != "dense":
            best = curves.best(key.setting, key.source, key.sparsity)
            if key == best:
                mark = "best"
            elif not_significant(cell, curves.scores[best], curves.floor(key.setting)):
                mark = "n.s."
        rows.append(_row(curves, key, curves.metric, curves.split, better, cell, mark))
        if key in curves.passes:
            rows.append(_row(curves, key, "passes", "train", "", curves.passes[key], ""))
        if key in curves.iou_mpi:
            rows.append(_row(curves, key, "iou_mpi", "", "", curves.iou_mpi[key], ""))
    return rows


def _row(curves: Curves, key: Key, quantity: str, split: str, better: str, cell: Cell,
         mark: str) -> list[Any]:
    floor = curves.floor(key.setting)
    return [key.setting, key.source, key.method, key.sparsity, quantity, split, better, cell.n,
            _seeds_text(curves.seeds.get(key, [])), cell.mean, cell.std, cell.low, cell.high,
            "" if floor is None else floor, mark]


# ---- plot ----------------------------------------------------------------------------------

def plot_curves(curves: Curves, path: Path, groups: Sequence[tuple[str, str]] | None = None,
                title: str = "") -> None:
    """The metric (%) against target sparsity: a line per method (and setting / mask source
    when the plot holds several), error bars of ± one standard deviation where a cell has
    several seeds; dense and chance as horizontal lines."""
    from sprune.analysis import _pyplot, _save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    groups = list(groups if groups is not None else curves.groups())
    several = len(groups) > 1
    styles = line_styles()
    for setting, source in groups:
        suffix = (f" {setting}" if several else "") + (f" (mask from {source})" if source else "")
        for method in curves.methods(setting, source):
            if method == "dense":
                cell = curves.dense(setting)
                ax.axhline(100 * cell.mean, linestyle="--", label=f"dense{suffix}",
                           color=None if several else "grey")
                continue
            keys = [Key(setting, source, method, s) for s in curves.sparsities(setting, source)]
            keys = [k for k in keys if k in curves.scores]
            cells = [curves.scores[k] for k in keys]
            errors = [100 * c.std for c in cells] if any(c.n > 1 for c in cells) else None
            ax.errorbar([100 * k.sparsity for k in keys], [100 * c.mean for c in cells],
                        yerr=errors, capsize=3, label=f"{method}{suffix}", **next(styles))
    for setting in dict.fromkeys(s for s, _ in groups):
        if setting in curves.chance:
            ax.axhline(100 * curves.chance[setting], linestyle=":", color="black",
                       label="chance" + (f" {setting}" if several else ""))
    n = curves.max_seeds()
    ax.set_xlabel("target sparsity (%)")
    ax.set_ylabel(f"{curves.split} {curves.metric} (%, {'lower' if curves.lower else 'higher'} "
                  "is better)")
    ax.set_title(title + (f" (bars: ± 1 std over {n} seeds)" if n > 1 else " (1 seed)"),
                 fontsize=10)
    ax.grid(alpha=0.3)
    outside_legend(ax)
    fig.tight_layout()
    _save_figure(fig, path)


def curves_markdown(curves: Curves, groups: Sequence[tuple[str, str]] | None = None,
                    heading: str = "###") -> str:
    """Each (setting, source) table with its notes, then the PARP-vs-MPI IOU tables."""
    groups = list(groups if groups is not None else curves.groups())
    parts = []
    for setting, source in groups:
        title = setting + (f", mask from {source}" if source else "")
        notes = " ".join(t for t in (spread_note(curves, setting), chance_text(curves, setting))
                         if t)
        parts.append(f"{heading} {title}\n\n{curves.split} {curves.metric} % "
                     f"({'lower' if curves.lower else 'higher'} is better):\n\n"
                     f"{curve_table(curves, setting, source)}\n{notes}\n")
    for setting in dict.fromkeys(s for s, _ in groups):
        table = iou_table(curves, setting)
        if table:
            parts.append(f"{heading} Mask IOU of PARP with MPI, {setting}\n\nIOU (%) of the "
                         "final PARP / PARP-P mask with the MPI mask of the same seed and "
                         "sparsity (paper 001: above 99.99 % from 20 % sparsity on).\n\n"
                         + table)
    return "\n".join(parts)

