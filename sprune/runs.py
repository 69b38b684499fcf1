"""Reading one run folder as `sprune prune` writes it: the one reader behind `sprune results`
(sprune.report) and `sprune analyze` (sprune.analysis).

    prune.json        method and target sparsity (every run, from its start)
    experiment.json   config, upstream, data.train_langs, mask_source
    outcome.json      dev scores, sparsity, passes (finished runs only)
    eval_<name>.json  scores on other data dirs (`sprune evaluate`, `sprune prune --test`)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sprune.io import read_json_object

FIX = "re-run the stage that wrote it"


@dataclass
class RunFiles:
    """The JSON files of one run folder; absent ones are None ({} for experiment.json)."""

    folder: Path
    prune: dict[str, Any] | None
    experiment: dict[str, Any]
    outcome: dict[str, Any] | None
    evals: dict[str, dict[str, float]] = field(default_factory=dict)


def read_run(folder: str | Path) -> RunFiles:
    """Read a run folder's files; an unreadable one is a one-line `UserError` naming it."""
    folder = Path(folder)

    def optional(name: str) -> dict[str, Any] | None:
        path = folder / name
        return read_json_object(path, fix=FIX) if path.is_file() else None

    return RunFiles(folder=folder, prune=optional("prune.json"),
                    experiment=optional("experiment.json") or {},
                    outcome=optional("outcome.json"),
                    evals={p.stem[len("eval_"):]: read_json_object(p, fix=FIX)
                           for p in sorted(folder.glob("eval_*.json"))})
