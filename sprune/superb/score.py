"""The SUPERB score (paper 004, Eq. 6) and the Table-1-like table of a SUPERB run.

    superb_s(u) = 1/|T| sum_t 1000 / (m_t^sota - m_t^fbank) * (m_t^u - m_t^fbank)

Each task metric is mapped linearly so that the FBANK baseline scores 0 and the state of the
art scores 1000; the mapping works for error rates too (both differences are negative). A
task with several metrics (slot filling: F1 and CER) scores the mean of its metrics' mapped
values. The reference values (`References`) come from a YAML, so the score is reproducible
and its inputs are visible: `{metric: {fbank: x, sota: y}}`, metric names `<TASK>` or
`<TASK>_<METRIC>` (e.g. `SF_F1`, `SF_CER`); the task is the part before the first '_'.
Only tasks that have results are averaged (a partial score says which tasks it covers).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

from sprune.config import load_yaml
from sprune.errors import UserError


@dataclass(frozen=True)
class Reference:
    fbank: float
    sota: float

    def scale(self, value: float) -> float:
        """1000 (value - fbank) / (sota - fbank)."""
        return 1000.0 * (value - self.fbank) / (self.sota - self.fbank)


References = dict[str, Reference]


def load_references(path: str | os.PathLike) -> References:
    """Read `{metric: {fbank: x, sota: y}}`; a missing or equal pair is a `UserError`."""
    data = load_yaml(path)
    references: References = {}
    for metric, pair in data.items():
        if not isinstance(pair, dict) or set(pair) != {"fbank", "sota"}:
            raise UserError(f"{path}: {metric}: expected a mapping with exactly 'fbank' and "
                            "'sota' numbers")
        fbank, sota = pair["fbank"], pair["sota"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (fbank, sota)):
            raise UserError(f"{path}: {metric}: fbank and sota must be numbers")
        if fbank == sota:
            raise UserError(f"{path}: {metric}: fbank and sota are equal; the score divides "
                            "by their difference")
        references[str(metric)] = Reference(float(fbank), float(sota))
    return references


def task_of(metric: str) -> str:
    return metric.split("_", 1)[0]


def task_scores(metrics: Mapping[str, float], references: References) -> dict[str, float]:
    """Mapped score per task (mean over the task's metrics) for the metrics given."""
    unknown = sorted(set(metrics) - set(references))
    if unknown:
        raise UserError(f"metric '{unknown[0]}' has no SUPERB reference values; known: "
                        f"{', '.join(references)}")
    by_task: dict[str, list[float]] = {}
    for metric, value in metrics.items():
        by_task.setdefault(task_of(metric), []).append(references[metric].scale(float(value)))
    return {task: sum(values) / len(values) for task, values in by_task.items()}


def superb_score(metrics: Mapping[str, float], references: References) -> float:
    """Eq. 6: the mean over tasks of the mapped task scores."""
    scores = task_scores(metrics, references)
    if not scores:
        raise UserError("no task results to score")
    return sum(scores.values()) / len(scores)


def format_table(rows: Mapping[str, Mapping[str, float]], references: References,
                 params: Mapping[str, int] | None = None) -> str:
    """Markdown like paper 004's Table 1: one row per upstream, a column per metric (in the
    references' order, those present in any row), and superb_s over the row's tasks."""
    metrics = [m for m in references if any(m in row for row in rows.values())]
    head = "| upstream | " + ("params | " if params else "") + " | ".join(metrics) + \
        " | superb_s | tasks |"
    lines = [head, "|---|" + ("---:|" if params else "") + "---:|" * (len(metrics) + 1) + "---|"]
    for name, row in rows.items():
        cells = [f"{row[m]:.2f}" if m in row else "-" for m in metrics]
        score = f"{superb_score(row, references):.2f}" if row else "-"
        size = [f"{params[name] / 1e6:.2f} M" if name in params else "-"] if params else []
        tasks = ",".join(sorted(task_scores(row, references)))
        lines.append("| " + " | ".join([name, *size, *cells, score, tasks]) + " |")
    return "\n".join(lines) + "\n"
