"""`RunSpec`: the one description of a run to train (the run id follows from it and the data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunSpec:
    """A family, its setting overrides, and what `kit train` options add: epochs, seed,
    target set, keypoint subset, and `folds` (train only the first K folds of the folds file).
    It pickles, so a worker process rebuilds the same run (the same id) from it."""

    family: str
    overrides: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    seed: int | None = None
    target_set: str = "masked"
    keypoints: str | None = None
    folds: int | None = None
