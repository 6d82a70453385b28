"""The base models a stack combines: each run's OOF and test predictions over all keypoints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kit.competition import Competition
from kit.store import RunResult


@dataclass(frozen=True)
class BaseModel:
    """One base model's predictions over ALL the competition's keypoints (NaN = not predicted)."""

    name: str
    keypoints: tuple[int, ...]  # competition indices it predicts
    oof: np.ndarray  # (N, K, 2) input pixels
    test: np.ndarray  # (M, K, 2)
    cv_score: float = float("nan")
    run_id: str | None = None
    family: str = ""

    @classmethod
    def from_run(cls, comp: Competition, run: RunResult) -> BaseModel:
        keypoints = tuple(run.keypoints)
        return cls(
            name=run.run_id,
            keypoints=keypoints,
            oof=_widen(run.oof, keypoints, comp.num_keypoints),
            test=_widen(run.test, keypoints, comp.num_keypoints),
            cv_score=run.cv_score,
            run_id=run.run_id,
            family=str(run.manifest.family),
        )


def _widen(array: np.ndarray, keypoints: Sequence[int], num_keypoints: int) -> np.ndarray:
    """(N, K', 2) columns of `keypoints` -> (N, K, 2) with NaN elsewhere."""
    out = np.full((len(array), num_keypoints, 2), np.nan, np.float64)
    out[:, list(keypoints)] = array
    return out
