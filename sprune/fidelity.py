"""The papers' claims checked against a recipe's measured cells (`sprune fidelity`).

Reads results.csv as `sprune results` / `sprune analyze` write it (`sprune.summary.CSV_HEADER`:
one row per setting, mask source, method, target sparsity and quantity, with mean, std, n
and the one-seed noise floor) and, for each setting with own-mask runs, judges:

  000 winning ticket   IMP at the highest sparsity >= dense - spread (error rates: <= dense +
                       spread): the winning ticket matches or beats the dense model
  001 PARP vs OMP/IMP  PARP at the highest sparsity >= the better of OMP and IMP - spread, and
                       PARP spent no more fine-tuning passes than dense (one fine-tuning run)
  001 PARP ~ MPI       IOU of the final PARP mask with the MPI mask >= `iou_threshold` (0.9
                       by default) at every sparsity measured

spread = the larger standard deviation of the two cells when both have two seeds or more,
else the setting's noise floor (`sprune.spread.noise_floor`), else 0 (said in the numbers).
A claim whose cells are missing is "not measured".
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sprune.errors import UserError
from sprune.report import markdown_table
from sprune.spread import spread
from sprune.summary import CSV_HEADER

REPRODUCED, NOT_REPRODUCED, NOT_MEASURED = "reproduced", "not reproduced", "not measured"


@dataclass(frozen=True)
class Measured:
    """One row of results.csv: a cell's mean and spread."""

    mean: float
    std: float
    n: int
    floor: float | None
    better: str            # "higher", "lower" or "" (passes, iou)

    def text(self) -> str:
        return f"{100 * self.mean:.1f}" + (f" ± {100 * self.std:.1f}" if self.n > 1 else "")


@dataclass(frozen=True)
class Verdict:
    paper: str
    claim: str
    setting: str
    compared: str
    numbers: str
    rule: str
    verdict: str


Cells = dict[tuple[str, str, float, str], Measured]   # (setting, method, sparsity, quantity)


def read_results(path: str | Path) -> Cells:
    """The own-mask cells of a results.csv; a missing file or column is a `UserError`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file; give the results.csv of a recipe's experiment "
                        "(written by `sprune results` or `sprune analyze --report`)")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in CSV_HEADER if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: no column {', '.join(missing)}; it is not a cell table of "
                            "`sprune results` (re-run the recipe's results stage)")
        cells: Cells = {}
        for line, row in enumerate(reader, start=2):
            if row["mask_from"]:
                continue
            try:
                cells[row["setting"], row["method"], round(float(row["target_sparsity"]), 4),
                      row["quantity"]] = Measured(
                    float(row["mean"]), float(row["std"] or 0.0), int(row["n"]),
                    float(row["noise_floor"]) if row["noise_floor"] else None, row["better"])
            except ValueError as error:
                raise UserError(f"{path}:{line}: {error}; re-run the recipe's results stage")
    return cells


def _margin(a: Measured, b: Measured) -> tuple[float, str]:
    """The spread between two cells and how it was found."""
    limit = spread(a, b, a.floor if a.floor is not None else b.floor)
    if limit is None:
        return 0.0, "no spread known (1 seed, test size unknown)"
    if a.n > 1 and b.n > 1:
        return limit, f"spread {100 * limit:.1f} (larger std)"
    return limit, f"spread {100 * limit:.1f} (1-seed noise floor)"


def _at_least(a: Measured, b: Measured, limit: float) -> bool:
    """a is as good as b within `limit`, in the metric's direction."""
    if a.better == "lower":
        return a.mean <= b.mean + limit
    return a.mean >= b.mean - limit


def check(cells: Cells, iou_threshold: float = 0.9) -> list[Verdict]:
    """The verdicts of every setting that has PARP or IMP cells (see the module doc)."""
    verdicts = []
    settings = sorted({k[0] for k in cells if k[1] in ("imp", "parp")})
    for setting in settings:
        metric = next((q for (s, _, _, q), m in cells.items() if s == setting and m.better), None)
        if metric is None:
            continue
        own = {(m, sp): v for (s, m, sp, q), v in cells.items() if s == setting and q == metric}
        pruned = sorted({sp for (m, sp) in own if m != "dense"})
        top = pruned[-1] if pruned else None
        verdicts += [winning_ticket(setting, metric, own, top),
                     parp_vs_omp_imp(setting, metric, own, cells, top),
                     parp_near_mpi(setting, cells, iou_threshold)]
    return verdicts


def winning_ticket(setting: str, metric: str, own: dict, top: float | None) -> Verdict:
    claim = ("000", "winning tickets match or beat dense at high sparsity")
    rule = "IMP at the highest sparsity within the spread of dense, or better"
    imp, dense = own.get(("imp", top)), own.get(("dense", 0.0))
    if imp is None or dense is None:
        return Verdict(*claim, setting, f"IMP at {_pct(top)} vs dense", "missing: " + ", ".join(
            n for n, c in (("IMP", imp), ("dense", dense)) if c is None), rule, NOT_MEASURED)
    limit, how = _margin(imp, dense)
    return Verdict(*claim, setting, f"IMP at {_pct(top)} vs dense ({metric})",
                   f"IMP {imp.text()}, dense {dense.text()}; {how}", rule,
                   REPRODUCED if _at_least(imp, dense, limit) else NOT_REPRODUCED)


def parp_vs_omp_imp(setting: str, metric: str, own: dict, cells: Cells, top: float | None
                    ) -> Verdict:
    claim = ("001", "PARP at least as good as OMP / IMP at high sparsity with one fine-tuning")
    rule = ("PARP within the spread of the better of OMP and IMP, or better, and PARP's "
            "passes <= dense's")
    parp = own.get(("parp", top))
    rivals = {m: own[m, top] for m in ("omp", "imp") if (m, top) in own}
    passes = {m: cells.get((setting, m, top if m != "dense" else 0.0, "passes"))
              for m in ("parp", "omp", "imp", "dense")}
    if parp is None or not rivals or passes["parp"] is None or passes["dense"] is None:
        missing = [n for n, c in (("PARP", parp), ("OMP / IMP", rivals or None),
                                  ("passes", passes["parp"] and passes["dense"])) if c is None]
        return Verdict(*claim, setting, f"PARP vs OMP / IMP at {_pct(top)}",
                       "missing: " + ", ".join(missing), rule, NOT_MEASURED)
    best_name = max(rivals, key=lambda m: -rivals[m].mean if parp.better == "lower"
                    else rivals[m].mean)
    best = rivals[best_name]
    limit, how = _margin(parp, best)
    one_run = passes["parp"].mean <= passes["dense"].mean + 1e-9
    numbers = (f"PARP {parp.text()}, " + ", ".join(f"{m.upper()} {c.text()}"
                                                   for m, c in rivals.items())
               + f"; {how}; passes: " + ", ".join(f"{m.upper()} {c.mean:.2f}"
                                                  for m, c in passes.items() if c is not None))
    ok = _at_least(parp, best, limit) and one_run
    return Verdict(*claim, setting, f"PARP vs {best_name.upper()} at {_pct(top)} ({metric})",
                   numbers, rule, REPRODUCED if ok else NOT_REPRODUCED)


def parp_near_mpi(setting: str, cells: Cells, iou_threshold: float) -> Verdict:
    claim = ("001", "the final PARP mask is close to the MPI mask")
    rule = f"IOU(PARP, MPI) >= {100 * iou_threshold:g} % at every sparsity"
    ious = sorted((sp, v) for (s, m, sp, q), v in cells.items()
                  if s == setting and m == "parp" and q == "iou_mpi")
    if not ious:
        return Verdict(*claim, setting, "IOU of PARP's and MPI's masks",
                       "missing: PARP and MPI runs of the same seed", rule, NOT_MEASURED)
    numbers = ", ".join(f"{_pct(sp)}: {v.text()}" for sp, v in ious)
    ok = all(v.mean >= iou_threshold for _, v in ious)
    return Verdict(*claim, setting, "IOU % of PARP's and MPI's masks", numbers, rule,
                   REPRODUCED if ok else NOT_REPRODUCED)


def _pct(sparsity: float | None) -> str:
    return "-" if sparsity is None else f"{100 * sparsity:g} %"


def markdown(verdicts: Sequence[Verdict]) -> str:
    """The fidelity table: paper, claim, setting, what was compared, numbers, rule, verdict."""
    header = ["paper", "claim", "setting", "compared", "numbers (%)", "rule", "verdict"]
    return markdown_table(header, [[v.paper, v.claim, v.setting, v.compared, v.numbers, v.rule,
                                    f"**{v.verdict}**"] for v in verdicts])
