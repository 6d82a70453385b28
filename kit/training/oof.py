"""Out-of-fold predictions assembled fold by fold, with the leak assertion that guards them."""

from __future__ import annotations

import numpy as np

from kit.errors import KitError


class OofLeakError(KitError):
    """An OOF row was (or would be) predicted by a model that trained on it, twice, or never."""


class OofAssembler:
    """Fills the OOF array fold by fold and asserts that no row leaks.

    A row may only be filled by the model of its own fold (the one fold model that did not
    train on it), at most once; `finish` asserts every row of the finished folds was filled.
    """

    def __init__(self, folds: np.ndarray, num_keypoints: int):
        self.folds = folds
        self.pred = np.full((len(folds), num_keypoints, 2), np.nan, np.float32)
        self.filled_by = np.full(len(folds), -1, np.int64)

    def add(self, fold: int, rows: np.ndarray, pred: np.ndarray) -> None:
        rows = np.asarray(rows, np.int64)
        wrong = rows[self.folds[rows] != fold]
        if wrong.size:
            raise OofLeakError(
                f"OOF leak: row {int(wrong[0])} belongs to fold {int(self.folds[wrong[0]])} "
                f"but the fold-{fold} model (which trained on it) predicted it",
                hint="delete the run folder and retrain",
            )
        twice = rows[self.filled_by[rows] != -1]
        if twice.size or len(np.unique(rows)) != len(rows):
            row = int(twice[0]) if twice.size else int(rows[0])
            raise OofLeakError(f"OOF row {row} is predicted twice", hint="delete the run folder")
        self.pred[rows] = pred
        self.filled_by[rows] = fold

    def finish(self, done_folds: list[int]) -> tuple[np.ndarray, np.ndarray]:
        expected = np.isin(self.folds, done_folds)
        missing = np.flatnonzero(expected & (self.filled_by != self.folds))
        if missing.size:
            raise OofLeakError(
                f"OOF row {int(missing[0])} of fold {int(self.folds[missing[0]])} has no "
                f"prediction from its fold model ({missing.size} rows)",
                hint="delete the run folder and retrain",
            )
        return self.pred, self.filled_by
