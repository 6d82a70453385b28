"""Competition metrics, NaN-aware and pure numpy. Lower is better for every score here.

- facial-keypoints (``metric = "rmse"``): RMSE in input pixels over the labelled coordinates,
  the way Kaggle scores the lookup-table rows (each x and each y is one value).
- ibug-68 (``metric = "mae"``): MAE in ORIGINAL image pixels (predictions are mapped back through
  each row's crop transform), plus NME: the mean point-to-point error of a face divided by its
  outer-eye-corner distance (``options.nme_points``), in %.

Truth may hold NaN (a missing label): that coordinate is not scored. A prediction that is NaN
where the truth is labelled is an error, not a free pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from kit.competition import Competition
from kit.data.arrays import KeypointData

METRICS = ("rmse", "mae")


def _check(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mask of labelled coordinates; raises if a labelled coordinate has no prediction."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
    labelled = np.isfinite(truth)
    if np.any(labelled & ~np.isfinite(pred)):
        raise ValueError("prediction is NaN or infinite where the truth is labelled")
    return labelled


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Root mean squared error over every labelled coordinate (NaN if none is labelled)."""
    labelled = _check(pred, truth)
    if not labelled.any():
        return float("nan")
    return float(np.sqrt(np.mean((pred[labelled] - truth[labelled]) ** 2)))


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error over every labelled coordinate (NaN if none is labelled)."""
    labelled = _check(pred, truth)
    if not labelled.any():
        return float("nan")
    return float(np.mean(np.abs(pred[labelled] - truth[labelled])))


def per_keypoint(fn, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """`fn` (rmse or mae) applied to each keypoint column of (N, K, 2) arrays: shape (K,)."""
    return np.array([fn(pred[:, k], truth[:, k]) for k in range(truth.shape[1])])


def eye_distance(truth: np.ndarray, norm_pair: tuple[int, int]) -> np.ndarray:
    """(N,) distance between the truth points `norm_pair` (NaN where either is unlabelled)."""
    a, b = norm_pair
    return np.linalg.norm(truth[:, a] - truth[:, b], axis=-1)


def nme_per_face(pred: np.ndarray, truth: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """(N,) per face: mean point-to-point distance over labelled points / `norm`, in %.

    NaN for a face with no labelled point or no positive normaliser.
    """
    _check(pred, truth)
    dist = np.linalg.norm(pred - truth, axis=-1)  # (N, K), NaN where unlabelled
    labelled = np.isfinite(dist)
    count = labelled.sum(axis=1)
    total = np.where(labelled, dist, 0.0).sum(axis=1)
    ok = (count > 0) & (norm > 0)
    out = np.full(len(truth), np.nan)
    out[ok] = 100.0 * total[ok] / count[ok] / norm[ok]
    return out


def nme(pred: np.ndarray, truth: np.ndarray, norm_pair: tuple[int, int]) -> float:
    """Normalised mean error in %, averaged over the faces that can be scored."""
    return _mean_finite(nme_per_face(pred, truth, eye_distance(truth, norm_pair)))


def _mean_finite(values: np.ndarray) -> float:
    finite = np.isfinite(values)
    return float(values[finite].mean()) if finite.any() else float("nan")


def per_row_error(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N,) RMSE of each row over its labelled coordinates (NaN for a row with no label)."""
    labelled = _check(pred, truth)
    sq = np.where(labelled, (pred - truth) ** 2, 0.0).reshape(len(truth), -1).sum(axis=1)
    count = labelled.reshape(len(truth), -1).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.sqrt(sq / np.maximum(count, 1)), np.nan)


@dataclass
class Scores:
    """One prediction scored by the competition's metric (lower is better)."""

    metric: str
    overall: float
    per_keypoint: dict[str, float]
    per_group: dict[str, float] = field(default_factory=dict)
    nme: float | None = None  # ibug-68 only, in %
    nme_per_group: dict[str, float] = field(default_factory=dict)
    rows: int = 0
    coordinates: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _groups(comp: Competition, keypoints: list[int]) -> dict[str, list[int]]:
    """Named subsets that lie fully inside the scored keypoints, as columns of the prediction."""
    column = {k: i for i, k in enumerate(keypoints)}
    out = {}
    for name in comp.subsets:
        members = comp.subset_indices(name)
        if all(k in column for k in members):
            out[name] = [column[k] for k in members]
    return out


def _nme_pair(comp: Competition, keypoints: list[int]) -> tuple[int, int] | None:
    names = comp.options.get("nme_points")
    if not names:
        return None
    idx = [comp.keypoint_names.index(n) for n in names]
    if not all(k in keypoints for k in idx):
        return None
    return keypoints.index(idx[0]), keypoints.index(idx[1])


def _in_metric_space(
    comp: Competition, pred: np.ndarray, data: KeypointData, keypoints: list[int] | None
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(pred, truth, keypoints) as float64, in the pixels the metric is defined in."""
    if comp.metric not in METRICS:
        raise ValueError(f"unknown metric {comp.metric!r} (known: {', '.join(METRICS)})")
    keypoints = list(range(comp.num_keypoints)) if keypoints is None else list(keypoints)
    truth = data.keypoints[:, keypoints].astype(np.float64)
    pred = np.asarray(pred, np.float64)
    if comp.metric == "mae":  # scored in original image pixels
        pred, truth = data.to_original_coords(pred), data.to_original_coords(truth)
    return pred, truth, keypoints


def _headline(metric: str):
    return rmse if metric == "rmse" else mae


def evaluate(
    comp: Competition,
    pred: np.ndarray,
    data: KeypointData,
    keypoints: list[int] | None = None,
) -> Scores:
    """Score (N, K', 2) input-pixel predictions of `keypoints` (default all) against `data`:
    overall, per keypoint, per named subset (group) and, for ibug-68, NME."""
    pred, truth, keypoints = _in_metric_space(comp, pred, data, keypoints)
    fn = _headline(comp.metric)
    names = [comp.keypoint_names[k] for k in keypoints]
    groups = _groups(comp, keypoints)
    scores = Scores(
        metric=comp.metric,
        overall=fn(pred, truth),
        per_keypoint=dict(zip(names, per_keypoint(fn, pred, truth).tolist(), strict=True)),
        per_group={g: fn(pred[:, cols], truth[:, cols]) for g, cols in groups.items()},
        rows=len(truth),
        coordinates=int(np.isfinite(truth).sum()),
    )
    pair = _nme_pair(comp, keypoints) if comp.metric == "mae" else None
    if pair is not None:
        norm = eye_distance(truth, pair)
        scores.nme = _mean_finite(nme_per_face(pred, truth, norm))
        scores.nme_per_group = {
            g: _mean_finite(nme_per_face(pred[:, cols], truth[:, cols], norm))
            for g, cols in groups.items()
        }
    return scores


def primary(
    comp: Competition, pred: np.ndarray, data: KeypointData, keypoints: list[int] | None = None
) -> float:
    """The competition's headline score only (cheap enough for every epoch's validation)."""
    pred, truth, _ = _in_metric_space(comp, pred, data, keypoints)
    return _headline(comp.metric)(pred, truth)
