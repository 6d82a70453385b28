"""The one progress event every stage emits, and the one callback type every stage takes.

A stage function takes ``on_event: OnEvent`` and calls it with `Event` records; the CLI
renders them (kit/cli/), `kit run` passes its own callback straight through to each stage.
``detail`` carries the stage's own typed record where a consumer needs more than a line
(an epoch's scores for the pruner, a trial's number for the tuning view).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Event", "OnEvent", "ignore"]


@dataclass(frozen=True)
class Event:
    """stage: fetch, folds, train, tune, stack, submit, track or run; what: "start", "done",
    "step" or a stage's own word ("epoch", "fold", "trial", ...); done/total: counts when known."""

    stage: str
    what: str
    done: float | None = None
    total: float | None = None
    text: str = ""
    detail: Any = None

    @property
    def fraction(self) -> float | None:
        if self.done is None or not self.total:
            return None
        return min(1.0, self.done / self.total)

    def __str__(self) -> str:
        return self.text or f"{self.stage}: {self.what}"


OnEvent = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """The default `on_event`: progress nobody watches."""
