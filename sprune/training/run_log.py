"""What a training run reports: JSON lines, TensorBoard scalars, a progress bar; rank 0 only."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sprune.training import distributed


class RunLog:
    """`out_dir/log.jsonl` (one JSON object per event) plus TensorBoard scalars under
    `out_dir/tensorboard` when TensorBoard is installed. On every process but rank 0 it
    writes nothing, so N processes leave one log."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.path = out_dir / "log.jsonl"
        self.enabled = distributed.is_main()
        self._tb = None

    def start(self, fresh: bool) -> None:
        """Open TensorBoard; a fresh (not resumed) run starts a new log.jsonl."""
        if not self.enabled:
            return
        if fresh and self.path.exists():
            self.path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional
            return
        self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        """Append `record` ({"event", "step", "epoch", values...}); its numbers also go to
        TensorBoard as `<event>/<key>` at its step."""
        if not self.enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("event", "step", "epoch") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{record['event']}/{k}", v, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def progress_bar(total: int, initial: int, name: str, show: bool) -> tqdm:
    """The run's tqdm bar (hidden on every process but rank 0)."""
    return tqdm(total=total, initial=initial, disable=not (show and distributed.is_main()),
                desc=name, dynamic_ncols=True, leave=False)
