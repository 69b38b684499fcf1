"""The LM pruning study of an experiment folder (paper 002) -> RESULTS.md, results.csv, plots.

An experiment folder holds one sub-folder per run, each with the outcome.json that `sprune lm
train` (kind dense or scratch) or `sprune lm prune` (kind pruned) wrote, and the eval JSON that
`sprune lm eval --text <name>.txt` wrote into the LM folder it measured (eval_<name>.json in
the run's shrunk/ for structured and low-rank runs, else in its final/). `write_lm_results`
collects them and writes, beside RESULTS.md:

  RESULTS.md      the table of every run (method, criterion, schedule, target, parameters,
                  FLOPs/token, ms/token, dev and test perplexity, updates), then paper 002's
                  three questions answered from those numbers (`compare_schedules`,
                  `compare_criteria`, `compare_scratch`), with whatever signs they have
  results.csv     the table, unformatted
  ppl_vs_params.png, ppl_vs_flops.png, ppl_vs_latency.png
                  one panel per criterion, one line per method x schedule, the dense LM and
                  the from-scratch baselines as references

The questions compare perplexities on one split: test when every run has a test result,
else dev (RESULTS.md says which). Lower perplexity wins; an exact tie is nobody's win.

  incremental vs one-shot   each (method, criterion, target) pruned both ways: the difference
                            incremental - one-shot, and in how many pairs incremental wins
  criterion vs magnitude    each (method, schedule, target) pruned with magnitude and with a
                            data-driven criterion (taylor, wanda, random): criterion - magnitude
  pruned vs scratch         each target with a from-scratch baseline: the best pruned run of
                            that target - scratch, and how many pruned runs beat scratch
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from sprune.errors import UserError
from sprune.io import atomic_path, atomic_write_text, read_json_object
from sprune.report import line_styles, markdown_table, outside_legend

KINDS = ("dense", "scratch", "pruned")
METHOD_ORDER = ("unstructured", "structured", "lowrank")
CRITERION_ORDER = ("magnitude", "taylor", "wanda", "random")
SCHEDULE_ORDER = ("one-shot", "cubic", "linear")
ONE_SHOT = "one-shot"
BASE_CRITERION = "magnitude"
# where `sprune lm eval` left a run's result, first found wins: the LM that was measured
EVAL_FOLDERS = ("shrunk", "final", ".")
PLOTS = {"params": "ppl_vs_params.png", "flops": "ppl_vs_flops.png",
         "latency": "ppl_vs_latency.png"}
FIX = "re-run the stage that wrote it, or delete the run folder"
OVER_TARGET = 0.02     # RESULTS.md names pruned runs this far above their target size


@dataclass
class LMRun:
    """One run folder: its outcome.json and, when evaluated, its eval JSON."""

    name: str
    kind: str                          # dense | scratch | pruned
    method: str | None                 # pruned runs: unstructured | structured | lowrank
    criterion: str | None
    schedule: str | None
    target_params: int | None          # pruned and scratch runs (None: a sparsity target)
    sparsity: float | None             # pruned runs: sparsity of the pruned scope
    params: int                        # non-zero parameters
    total_params: int | None           # parameters the stored model holds (zeros included)
    flops_per_token: float | None
    flops_nonzero: float | None        # FLOPs if zero weights were skipped (theoretical)
    ms_per_token: float | None
    dev_ppl: float | None
    test_ppl: float | None
    steps: int | None                  # updates of this run (pruned: of the fine-tuning)
    eval_file: str | None = None
    wer: dict[str, float] = field(default_factory=dict)   # "dev" / "test": WER % of a
                                       # transducer with this LM fused (sprune.decode.report)

    @property
    def target(self) -> str:
        """What the run was sized to: '350k', '2M', 's0.5'; '-' for the dense LM."""
        if self.target_params is not None:
            return size_label(self.target_params)
        if self.sparsity is not None and self.kind == "pruned":
            return f"s{self.sparsity:g}"
        return "-"

    def ppl(self, split: str) -> float | None:
        return self.test_ppl if split == "test" else self.dev_ppl

    def value(self, metric: str) -> float | None:
        """What `metric` ranks runs by: "dev" / "test" perplexity, or "wer_dev" / "wer_test"
        (WER % with the LM fused); lower is better for all of them."""
        if metric.startswith("wer_"):
            return self.wer.get(metric[4:])
        return self.ppl(metric)


def metric_name(metric: str) -> str:
    """"test" -> "test ppl", "wer_test" -> "test WER %"."""
    return f"{metric[4:]} WER %" if metric.startswith("wer_") else f"{metric} ppl"


def metric_unit(metric: str) -> str:
    """The unit of a difference of `metric`: "ppl" or "WER points"."""
    return "WER points" if metric.startswith("wer_") else "ppl"


def size_label(params: int | float) -> str:
    """350000 -> '350k', 2000000 -> '2M', 2500000 -> '2.5M', 999 -> '999'."""
    params = int(params)
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if params >= scale:
            return f"{params / scale:.4g}{unit}"
    return str(params)


def _number(doc: dict[str, Any], key: str, path: Path, required: bool = False) -> Any:
    value = doc.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{path}: '{key}' is {value!r}, not a number; {FIX}")
    return value


def read_lm_run(folder: Path, text: str = "test") -> LMRun:
    """The run in `folder` (its outcome.json must exist): one-line errors name a bad file."""
    path = folder / "outcome.json"
    outcome = read_json_object(path, fix=FIX)
    kind = outcome.get("kind")
    if kind not in KINDS:
        raise UserError(f"{path}: 'kind' is {kind!r}, not one of {', '.join(KINDS)}; {FIX}")
    dev = outcome.get("dev")
    if not isinstance(dev, dict):
        raise UserError(f"{path}: no 'dev' results (an object with 'ppl'); {FIX}")
    evaluation: dict[str, Any] = {}
    eval_file = None
    for sub in EVAL_FOLDERS:
        candidate = folder / sub / f"eval_{text}.json"
        if candidate.is_file():
            evaluation = read_json_object(candidate, fix="run `sprune lm eval` on it again")
            eval_file = str(candidate.relative_to(folder))
            break
    params = evaluation.get("parameters") if isinstance(evaluation.get("parameters"), dict) \
        else {}
    latency = evaluation.get("latency") if isinstance(evaluation.get("latency"), dict) else {}
    method = outcome.get("method") if kind == "pruned" else None
    if kind == "pruned" and not isinstance(method, str):
        raise UserError(f"{path}: a pruned run without a 'method'; {FIX}")
    return LMRun(
        name=folder.name, kind=kind, method=method,
        criterion=outcome.get("criterion") if kind == "pruned" else None,
        schedule=outcome.get("schedule") if kind == "pruned" else None,
        target_params=_number(outcome, "target_params", path),
        sparsity=_number(outcome, "scope_sparsity", path),
        params=int(params.get("nonzero") or _number(outcome, "params", path, required=True)),
        total_params=params.get("total") or outcome.get("total_params"),
        flops_per_token=evaluation.get("flops_per_token") or outcome.get("flops_per_token"),
        flops_nonzero=evaluation.get("flops_per_token_nonzero_theoretical"),
        ms_per_token=latency.get("ms_per_token"),
        dev_ppl=_number(dev, "ppl", path),
        test_ppl=_number(evaluation, "ppl", folder / (eval_file or ".")) if evaluation else None,
        steps=outcome.get("steps"), eval_file=eval_file)


def _order(value: str | None, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), value or "")


def sort_runs(runs: Iterable[LMRun]) -> list[LMRun]:
    """Dense first, then each target from the largest: its scratch baseline, then the pruned
    runs by method, criterion, schedule."""
    def key(r: LMRun) -> tuple:
        return (r.kind != "dense", -(r.target_params or 0), r.target,
                r.kind != "scratch", _order(r.method, METHOD_ORDER),
                _order(r.criterion, CRITERION_ORDER), _order(r.schedule, SCHEDULE_ORDER),
                r.name)
    return sorted(runs, key=key)


def collect_lm_runs(exp_dir: str | Path, text: str = "test") -> list[LMRun]:
    """Every run folder of `exp_dir` (a direct sub-folder with outcome.json), sorted."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise UserError(f"{exp_dir}: no such folder; give the experiment folder of an LM "
                        "recipe (exp/<tag>)")
    runs = [read_lm_run(p.parent, text) for p in sorted(exp_dir.glob("*/outcome.json"))]
    if not runs:
        raise UserError(f"{exp_dir}: no finished runs (no */outcome.json); run the training "
                        "and pruning stages first")
    return sort_runs(runs)


def pick_split(runs: Sequence[LMRun]) -> str:
    """'test' when every run has a test perplexity, else 'dev'."""
    return "test" if all(r.test_ppl is not None for r in runs) else "dev"


# -- the three questions -------------------------------------------------------------------

@dataclass
class Pair:
    """Two runs that differ in one setting: `base` (one-shot, magnitude, scratch) and
    `other` (incremental, data-driven, pruned); `key` names what they share."""

    key: dict[str, str]
    base: LMRun
    other: LMRun
    split: str

    @property
    def difference(self) -> float:
        """other - base perplexity: negative when `other` is better."""
        return self.other.value(self.split) - self.base.value(self.split)

    @property
    def relative(self) -> float:
        return self.difference / self.base.value(self.split)

    @property
    def other_wins(self) -> bool:
        return self.difference < 0

    @property
    def tie(self) -> bool:
        return self.difference == 0


def _pairs(runs: Sequence[LMRun], split: str, vary: str, base_value: str,
           shared: tuple[str, ...]) -> list[Pair]:
    """Pruned runs that agree in `shared` and whose `vary` attribute is `base_value` on one
    side and anything else on the other (each other value is a pair of its own)."""
    pruned = [r for r in runs if r.kind == "pruned" and r.value(split) is not None]
    groups: dict[tuple, dict[str, LMRun]] = {}
    for r in pruned:
        groups.setdefault(tuple(getattr(r, k) if k != "target" else r.target for k in shared),
                          {})[getattr(r, vary)] = r
    pairs = []
    for shared_values, by_value in groups.items():
        base = by_value.get(base_value)
        if base is None:
            continue
        for value, other in by_value.items():
            if value != base_value:
                key = dict(zip(shared, map(str, shared_values)))
                key[vary] = value
                pairs.append(Pair(key, base, other, split))
    return sorted(pairs, key=_pair_key)


def _pair_key(p: Pair) -> tuple:
    r = p.other
    return (_order(r.method, METHOD_ORDER), _order(r.criterion, CRITERION_ORDER),
            _order(r.schedule, SCHEDULE_ORDER), -(r.target_params or 0), r.target)


def compare_schedules(runs: Sequence[LMRun], split: str) -> list[Pair]:
    """One-shot (base) vs each incremental schedule, per method, criterion and target."""
    return _pairs(runs, split, "schedule", ONE_SHOT, ("method", "criterion", "target"))


def compare_criteria(runs: Sequence[LMRun], split: str) -> list[Pair]:
    """Magnitude (base) vs each other criterion, per method, schedule and target."""
    return _pairs(runs, split, "criterion", BASE_CRITERION, ("method", "schedule", "target"))


@dataclass
class ScratchRow:
    """One target size: its from-scratch baseline against the pruned runs of that size."""

    target: str
    scratch: LMRun
    best: LMRun                 # the pruned run with the lowest perplexity
    pruned_better: int          # pruned runs of this size below the scratch perplexity
    pruned_total: int
    split: str

    @property
    def pair(self) -> Pair:
        return Pair({"target": self.target}, self.scratch, self.best, self.split)


def compare_scratch(runs: Sequence[LMRun], split: str) -> list[ScratchRow]:
    """Per target with a scratch baseline and pruned runs: the best pruned run vs scratch."""
    rows = []
    for scratch in (r for r in runs if r.kind == "scratch" and r.value(split) is not None):
        same = [r for r in runs if r.kind == "pruned" and r.target == scratch.target
                and r.value(split) is not None]
        if not same:
            continue
        best = min(same, key=lambda r: (r.value(split), r.name))
        better = sum(r.value(split) < scratch.value(split) for r in same)
        rows.append(ScratchRow(scratch.target, scratch, best, better, len(same), split))
    return rows


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _signed(value: float, digits: int = 2) -> str:
    return f"{value:+.{digits}f}"


SMALL_MARGIN = 0.005   # a mean relative difference below 0.5 % is called a small margin


def verdict(pairs: Sequence[Pair], other: str, base: str) -> str:
    """A sentence on which side the pairs favour: the side that wins more pairs and has the
    lower mean perplexity, "by a small margin" when the mean relative difference is below
    SMALL_MARGIN; "no clear winner" when the wins and the mean disagree."""
    wins = sum(p.other_wins for p in pairs)
    losses = sum(not p.other_wins and not p.tie for p in pairs)
    mean = _mean([p.difference for p in pairs])
    relative = _mean([p.relative for p in pairs])
    margin = (f", by a small margin (mean {_signed(100 * relative, 1)} %)"
              if abs(relative) < SMALL_MARGIN else "")
    if wins > losses and mean < 0:
        return f"{other} is better than {base} here{margin}"
    if losses > wins and mean > 0:
        return f"{base} is better than {other} here{margin}"
    return (f"no clear winner: {other} wins {wins} and loses {losses} pairs, mean "
            f"difference {_signed(mean)}")


def summary_line(pairs: Sequence[Pair], other: str, base: str,
                 by: tuple[str, ...] = ("method",)) -> str:
    """'cubic has the lower test ppl in 7 of 9 pairs (mean cubic - one-shot -0.41 ppl,
    -1.1 %); by method: unstructured 3/3, ...: cubic is better than one-shot here.'"""
    if not pairs:
        return f"No pair of runs differs only in {other} vs {base}: nothing to compare."
    split = pairs[0].split
    wins = sum(p.other_wins for p in pairs)
    ties = sum(p.tie for p in pairs)
    text = (f"{other} has the lower {metric_name(split)} in **{wins} of {len(pairs)}** pairs"
            + (f" ({ties} tied)" if ties else "")
            + f" (mean {other} - {base}: {_signed(_mean([p.difference for p in pairs]))} "
            f"{metric_unit(split)}, "
            f"{_signed(100 * _mean([p.relative for p in pairs]), 1)} %)")
    for field in by:
        groups: dict[str, list[Pair]] = {}
        for p in pairs:
            groups.setdefault(p.key[field], []).append(p)
        if len(groups) > 1:
            text += f"; by {field}: " + ", ".join(
                f"{name} {sum(p.other_wins for p in group)}/{len(group)}"
                for name, group in groups.items())
    return text + f": **{verdict(pairs, other, base)}**."


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def pairs_table(pairs: Sequence[Pair], shared: Sequence[str], base_name: str,
                other_name: str) -> str:
    """One row per pair: what the two runs share, both perplexities, other - base."""
    split = pairs[0].split
    header = [*shared, f"{metric_name(split)} {base_name}", f"{metric_name(split)} {other_name}",
              "difference", "relative", "better"]
    rows = []
    for p in pairs:
        better = "tie" if p.tie else (other_name if p.other_wins else base_name)
        rows.append([*(p.key[k] for k in shared), _fmt(p.base.value(split)),
                     _fmt(p.other.value(split)), _signed(p.difference),
                     f"{_signed(100 * p.relative, 1)} %", better])
    return markdown_table(header, rows)


def scratch_section(rows: Sequence[ScratchRow]) -> str:
    if not rows:
        return ("No target size has both a from-scratch baseline and pruned runs: nothing "
                "to compare.\n")
    split = rows[0].split
    pairs = [r.pair for r in rows]
    wins = sum(p.other_wins for p in pairs)
    beaten = sum(r.pruned_better for r in rows)
    total = sum(r.pruned_total for r in rows)
    text = (f"The best pruned model has the lower {metric_name(split)} than the same-size "
            f"model trained from scratch at **{wins} of {len(rows)}** sizes (mean best pruned "
            f"- scratch: {_signed(_mean([p.difference for p in pairs]))} {metric_unit(split)}, "
            f"{_signed(100 * _mean([p.relative for p in pairs]), 1)} %); {beaten} of {total} "
            f"pruned runs beat the scratch baseline of their size: "
            f"**{verdict(pairs, 'pruning', 'training from scratch')}**.\n\n")
    table = [[r.target, _fmt(r.scratch.value(split)), r.best.name, _fmt(r.best.value(split)),
              _signed(r.pair.difference), f"{_signed(100 * r.pair.relative, 1)} %",
              f"{r.pruned_better} / {r.pruned_total}"] for r in rows]
    return text + markdown_table(
        ["target", f"scratch {metric_name(split)}", "best pruned run", f"its {metric_name(split)}",
         "difference", "relative", "pruned runs better than scratch"], table)


# -- table, CSV, plots ---------------------------------------------------------------------

CSV_HEADER = ["run", "kind", "method", "criterion", "schedule", "target_params",
              "scope_sparsity", "params", "total_params", "flops_per_token",
              "flops_per_token_nonzero_theoretical", "ms_per_token", "dev_ppl", "test_ppl",
              "updates", "eval_file"]


def csv_rows(runs: Sequence[LMRun]) -> list[list[Any]]:
    return [[r.name, r.kind, r.method or "", r.criterion or "", r.schedule or "",
             "" if r.target_params is None else r.target_params,
             "" if r.sparsity is None else r.sparsity, r.params,
             "" if r.total_params is None else r.total_params,
             "" if r.flops_per_token is None else r.flops_per_token,
             "" if r.flops_nonzero is None else r.flops_nonzero,
             "" if r.ms_per_token is None else r.ms_per_token,
             "" if r.dev_ppl is None else r.dev_ppl,
             "" if r.test_ppl is None else r.test_ppl,
             "" if r.steps is None else r.steps, r.eval_file or ""] for r in runs]


def runs_table(runs: Sequence[LMRun], split: str) -> str:
    """The Markdown table of every run; the best `split` ppl of each target in bold."""
    best: dict[str, float] = {}
    for r in runs:
        if r.kind != "dense" and r.value(split) is not None:
            best[r.target] = min(best.get(r.target, math.inf), r.value(split))
    rows = []
    for r in runs:
        ppls = {"dev": _fmt(r.dev_ppl), "test": _fmt(r.test_ppl)}
        if r.kind != "dense" and r.value(split) is not None and r.value(split) == best[r.target]:
            ppls[split] = f"**{ppls[split]}**"
        rows.append([r.name, r.kind if r.kind != "pruned" else r.method or "-",
                     r.criterion or "-", r.schedule or "-", r.target, f"{r.params:,}",
                     _fmt(None if r.flops_per_token is None else r.flops_per_token / 1e6, 3),
                     _fmt(r.ms_per_token, 3), ppls["dev"], ppls["test"],
                     "-" if r.steps is None else str(r.steps)])
    return markdown_table(["run", "method", "criterion", "schedule", "target", "params",
                           "MFLOPs/token", "ms/token", "dev ppl", "test ppl", "updates"], rows)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


AXES: dict[str, tuple[str, Callable[[LMRun], float | None]]] = {
    "params": ("non-zero parameters", lambda r: r.params),
    "flops": ("MFLOPs per token (dense kernels; a masked LM costs what the dense one does)",
              lambda r: None if r.flops_per_token is None else r.flops_per_token / 1e6),
    "latency": ("ms per token (cached step, batch 8)", lambda r: r.ms_per_token),
}


def plot_ppl(runs: Sequence[LMRun], axis: str, split: str, path: Path,
             levels: Sequence[tuple[str, float]] = ()) -> bool:
    """One panel per criterion: the `split` metric (`LMRun.value`) against `axis` (params |
    flops | latency), one line per method x schedule (colour: method; solid: incremental,
    dashed: one-shot), the dense LM (star, dotted level), the scratch baselines (black) and
    each of `levels` (label, value: a dash-dotted line) in every panel. False (and no file)
    when no run has the x value."""
    label, x_of = AXES[axis]
    points = [r for r in runs if x_of(r) is not None and r.value(split) is not None]
    pruned = [r for r in points if r.kind == "pruned"]
    if not points:
        return False
    criteria = sorted({r.criterion for r in pruned}, key=lambda c: _order(c, CRITERION_ORDER)) \
        or ["-"]
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(criteria), figsize=(5.2 * len(criteria), 4.4),
                             sharey=True, squeeze=False)
    methods = sorted({r.method for r in pruned}, key=lambda m: _order(m, METHOD_ORDER))
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    xs = [x_of(r) for r in points]
    log_x = min(xs) > 0 and max(xs) / min(xs) > 8
    for ax, criterion in zip(axes[0], criteria):
        styles = line_styles()
        lines: dict[tuple[str, str], list[LMRun]] = {}
        for r in pruned:
            if r.criterion == criterion:
                lines.setdefault((r.method, r.schedule), []).append(r)
        for (method, schedule), group in sorted(
                lines.items(), key=lambda kv: (_order(kv[0][0], METHOD_ORDER),
                                               _order(kv[0][1], SCHEDULE_ORDER))):
            group.sort(key=x_of)
            ax.plot([x_of(r) for r in group], [r.value(split) for r in group],
                    label=f"{method} {schedule}", color=colours[method],
                    linestyle="--" if schedule == ONE_SHOT else "-", **next(styles))
        scratch = sorted((r for r in points if r.kind == "scratch"), key=x_of)
        if scratch:
            ax.plot([x_of(r) for r in scratch], [r.value(split) for r in scratch], color="black",
                    marker="x", markersize=8, linewidth=1.2, label="from scratch")
        for r in (r for r in points if r.kind == "dense"):
            ax.axhline(r.value(split), color="grey", linestyle=":", linewidth=1)
            ax.plot([x_of(r)], [r.value(split)], marker="*", markersize=12, color="grey",
                    linestyle="none", label="dense")
        for name, level in levels:
            ax.axhline(level, color="black", linestyle="-.", linewidth=1, label=name)
        if log_x:
            ax.set_xscale("log")
        ax.set_title(f"criterion: {criterion}")
        ax.set_xlabel(label if len(label) < 40 else label.split(" (")[0])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{metric_name(split)} (lower is better)")
    outside_legend(axes[0][-1])
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


# -- RESULTS.md ----------------------------------------------------------------------------

def _comparison_section(title: str, pairs: Sequence[Pair], field: str, order: Sequence[str],
                        base: str, default: str, shared: tuple[str, ...]) -> str:
    """A question's markdown section: per value of `field` that differs from `base`, the
    summary line and the pairs table (`default` names the other side when there are none)."""
    section = title
    if not pairs:
        section += summary_line([], default, base) + "\n"
    for name in sorted({p.key[field] for p in pairs}, key=lambda v: _order(v, order)):
        these = [p for p in pairs if p.key[field] == name]
        section += (summary_line(these, name, base, shared) + "\n\n"
                    + pairs_table(these, shared, base, name) + "\n")
    return section


def render(runs: Sequence[LMRun], title: str, note: str, plots: dict[str, str]) -> str:
    split = pick_split(runs)
    dense = [r for r in runs if r.kind == "dense"]
    dense_steps = f" after the dense LM's {dense[0].steps}" if dense and dense[0].steps else ""
    parts = [f"# {title}\n"]
    if note:
        parts.append(note.strip() + "\n")
    parts.append(
        f"Perplexities: dev from the end of each run (outcome.json), test from `sprune lm "
        f"eval` (the run's eval JSON: shrunk/ for structured and low-rank runs, final/ "
        f"otherwise). The comparisons below use **{split}** perplexity"
        + ("" if split == "test" else " (some runs have no test result yet)")
        + f"; bold: the lowest {split} ppl of each target size. params: non-zero parameters, "
        f"embeddings included. MFLOPs/token: one cached decoding step (dense kernels: an "
        f"unstructured-pruned LM is stored and run masked, so it costs the dense FLOPs; "
        f"results.csv has the count if its zeros were skipped). ms/token: `sprune lm eval "
        f"--latency` (median cached step of 8 hypotheses). updates: the run's own updates "
        f"(pruned runs: the fine-tuning{dense_steps}).\n")
    parts.append("## Runs\n\n" + runs_table(runs, split))
    over = [r for r in runs if r.kind == "pruned" and r.target_params
            and r.params > (1 + OVER_TARGET) * r.target_params]
    if over:
        parts.append(
            f"{len(over)} pruned run(s) ended more than {100 * OVER_TARGET:g} % above their "
            "target size (whole heads / FFN units / ranks are removed, so a unit method can "
            "stop short of the target), which favours them in the comparisons: "
            + ", ".join(f"{r.name} ({100 * (r.params / r.target_params - 1):+.1f} %)"
                        for r in over) + ".\n")
    parts.append("## Paper 002's questions at this scale\n\nComputed from the table above "
                 "(`sprune lm results`); each line states the sign it finds.\n")
    parts.append(_comparison_section(
        "### 1. Incremental vs one-shot pruning\n\n", compare_schedules(runs, split),
        "schedule", SCHEDULE_ORDER, ONE_SHOT, "incremental", ("method", "criterion", "target")))
    parts.append(_comparison_section(
        "### 2. Data-driven (Taylor) vs magnitude criterion\n\n", compare_criteria(runs, split),
        "criterion", CRITERION_ORDER, BASE_CRITERION, "taylor", ("method", "schedule", "target")))
    parts.append("### 3. Pruned vs same-size models trained from scratch\n\n"
                 + scratch_section(compare_scratch(runs, split)))
    if plots:
        parts.append("## Plots\n\n" + "\n".join(f"![ppl vs {axis}]({name})\n"
                                                for axis, name in plots.items()))
    return "\n".join(parts)


def write_lm_results(exp_dir: str | Path, out: str | Path | None = None, text: str = "test",
                     title: str | None = None, note: str = "") -> Path:
    """Write RESULTS.md (`out`, default EXP_DIR/RESULTS.md), results.csv and the PNG plots
    beside it, each atomically; returns the RESULTS.md path."""
    exp_dir = Path(exp_dir)
    runs = collect_lm_runs(exp_dir, text)
    out = Path(out) if out is not None else exp_dir / "RESULTS.md"
    split = pick_split(runs)
    plots = {}
    for axis, name in PLOTS.items():
        if plot_ppl(runs, axis, split, out.parent / name):
            plots[axis] = name
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([CSV_HEADER] + csv_rows(runs))
    atomic_write_text(out.parent / "results.csv", buffer.getvalue())
    atomic_write_text(out, render(runs, title or f"{exp_dir.name}: LM pruning", note, plots))
    return out
