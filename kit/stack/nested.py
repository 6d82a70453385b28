"""The honesty of nested CV: a meta-model for fold f trains on the other folds only."""

from __future__ import annotations

import numpy as np

from kit.errors import KitError

# A meta-model needs this many labelled rows to learn from; with fewer (a keypoint labelled in
# few rows of a small data set) that fold's ridge and LightGBM fall back to the mean blend.
MIN_META_ROWS = 30


class MetaLeakError(KitError):
    """A meta-model would train on (or predict outside) the fold it is scored on."""


def check_meta_rows(
    folds: np.ndarray, fold: int, train_rows: np.ndarray, predict_rows: np.ndarray
) -> None:
    """Assert a meta-model for `fold` trains on other folds only and predicts `fold` only."""
    inside = train_rows[folds[train_rows] == fold]
    if inside.size:
        raise MetaLeakError(
            f"stack leak: the meta-model scored on fold {fold} would train on row "
            f"{int(inside[0])} of that fold ({inside.size} rows)",
            hint="this is a bug in the fold split of kit.stack",
        )
    outside = predict_rows[folds[predict_rows] != fold]
    if outside.size:
        raise MetaLeakError(
            f"stack leak: the fold-{fold} meta-model would predict row {int(outside[0])} "
            f"of fold {int(folds[outside[0]])}",
            hint="this is a bug in the fold split of kit.stack",
        )


def fold_rows(folds: np.ndarray, fold: int, usable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(training rows, rows to predict) of the meta-model for `fold`: usable rows of the other
    folds, and every row of `fold`."""
    return np.flatnonzero(usable & (folds != fold)), np.flatnonzero(folds == fold)
