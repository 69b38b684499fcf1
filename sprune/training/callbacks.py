"""The hooks pruning methods use to see and change a training run."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sprune.training.loop import Trainer


class Callback:
    """Hooks into the loop. Every hook gets the trainer and may read or change its state.

    Order in one update: on_step_start -> forward/backward -> after_backward -> clip ->
    optimizer.step -> on_step_end -> (evaluation -> on_evaluate) -> (checkpoint).
    State a callback needs after a resume goes in `state_dict` (tensors and JSON values).
    """

    name: str = "callback"

    def on_train_start(self, trainer: "Trainer") -> None: ...
    def on_step_start(self, trainer: "Trainer") -> None: ...
    def after_backward(self, trainer: "Trainer") -> None: ...
    def on_step_end(self, trainer: "Trainer") -> None: ...
    def on_evaluate(self, trainer: "Trainer", metrics: dict[str, float]) -> None: ...
    def on_epoch_end(self, trainer: "Trainer") -> None: ...
    def on_train_end(self, trainer: "Trainer") -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...
