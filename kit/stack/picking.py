"""Per keypoint, the meta-model that CV picks, and the comparison table."""

from __future__ import annotations

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.metrics import metric_for
from kit.stack.bases import BaseModel

BLEND, RIDGE, LIGHTGBM = "mean blend", "ridge stack", "lightgbm stack"


PICKED = "stack (picked per keypoint)"


# The pick per keypoint is between the two meta-learners, the simpler first: LightGBM must
# beat ridge by PICK_MARGIN (relative CV loss; the "one standard error" idea). Base models
# and the blend stay in the table but are not candidates: the ridge already shrinks towards
# the blend, and picking among more close candidates per fold added more selection noise
# than it saved (docs/benchmarks.md, "Stacking").
PICK_FROM = (RIDGE, LIGHTGBM)


PICK_MARGIN = 0.005


def row_losses(
    comp: Competition, data: KeypointData, pred: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) summed loss (the metric's per-coordinate error: squared for rmse, absolute for
    mae) over each labelled keypoint's coordinates in the metric's pixels, and (N, K)
    labelled-coordinate counts. A missing prediction of a labelled coordinate is an infinite
    loss."""
    metric = metric_for(comp)
    truth = metric.in_space(data, data.keypoints.astype(np.float64))
    diff = metric.in_space(data, pred) - truth
    labelled = np.isfinite(truth)
    per = metric.error(diff)
    per = np.where(labelled, np.where(np.isfinite(per), per, np.inf), 0.0)
    return per.sum(axis=2), labelled.sum(axis=2)


def pick_methods(
    losses: dict[str, tuple[np.ndarray, np.ndarray]], rows: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """Per keypoint, the method with the lowest mean loss over `rows`, where a method listed
    later (more complex: base models, blend, ridge, LightGBM) must beat the current pick by
    PICK_MARGIN: with few rows per fold, smaller differences are mostly noise. Returns the
    method names and (K,) indices into them."""
    names = list(losses)
    scores = np.stack(
        [
            losses[n][0][rows].sum(axis=0) / np.maximum(losses[n][1][rows].sum(axis=0), 1)
            for n in names
        ]
    )  # (methods, K)
    scores = np.where(np.isnan(scores), np.inf, scores)
    choice = np.zeros(scores.shape[1], np.int64)
    for i in range(1, len(names)):
        better = scores[i] < scores[choice, np.arange(scores.shape[1])] * (1 - PICK_MARGIN)
        choice[better] = i
    return names, choice


def _best_single(bases: list[BaseModel], covered: list[int], scores: dict) -> str:
    """The base model with the best CV among those predicting every stacked keypoint (else
    among all of them)."""
    full = [b for b in bases if set(covered) <= set(b.keypoints)] or bases
    return min(full, key=lambda b: scores[b.name].overall).name


def comparison_table(
    comp: Competition, bases: list[BaseModel], covered: list[int], scores: dict, best: str
) -> pd.DataFrame:
    """One row per method (base models, blend, best single, ridge, LightGBM, picked); columns:
    keypoints predicted, overall score, and one score per keypoint (NaN = not predicted)."""
    rows = []
    labels = [(b.name, b.name, "base") for b in bases]
    labels += [(BLEND, BLEND, "blend"), (f"best single ({best})", best, "best single")]
    labels += [(RIDGE, RIDGE, "stack"), (LIGHTGBM, LIGHTGBM, "stack"), (PICKED, PICKED, "stack")]
    for label, key, kind in labels:
        s = scores[key]
        row = {"method": label, "kind": kind, "keypoints": len(s.per_keypoint)}
        row["overall"] = s.overall
        for k in covered:
            row[comp.keypoint_names[k]] = s.per_keypoint.get(comp.keypoint_names[k], np.nan)
        rows.append(row)
    return pd.DataFrame(rows)
