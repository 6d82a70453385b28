"""Competition metrics, NaN-aware and pure numpy. Lower is better for every score here.

A competition.toml's ``metric`` names a `Metric` (`get_metric`, `metric_for`): an object that
carries its direction, the pixels it is scored in, its per-coordinate error and aggregate, and
what the stack needs of it (LightGBM's loss, how a crop's scale weighs an error), so that no
code tests the metric's name.

- ``rmse`` (facial-keypoints): RMSE in input pixels over the labelled coordinates, the way
  Kaggle scores the lookup-table rows (each x and each y is one value).
- ``mae`` (ibug-68, imm-58): MAE in ORIGINAL image pixels (predictions are mapped back through
  each row's crop transform), plus NME: the mean point-to-point error of a face divided by its
  outer-eye-corner distance (``options.nme_points``), in %.

Truth may hold NaN (a missing label): that coordinate is not scored. A prediction that is NaN
where the truth is labelled is an error, not a free pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kit.competition import CONFIG_NAME, Competition
from kit.data.arrays import KeypointData
from kit.errors import KitError

INPUT, ORIGINAL = "input", "original"  # the pixels a metric is scored in


def _check(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mask of labelled coordinates; raises if a labelled coordinate has no prediction."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != truth shape {truth.shape}")
    labelled = np.isfinite(truth)
    if np.any(labelled & ~np.isfinite(pred)):
        raise ValueError("prediction is NaN or infinite where the truth is labelled")
    return labelled


def _squared(diff: np.ndarray) -> np.ndarray:
    return diff**2


def _as_is(mean: Any) -> Any:
    return mean


@dataclass(frozen=True)
class Metric:
    """A competition metric, after AutoGluon's `Scorer`: what its name used to decide.

    score = aggregate(mean of error(pred - truth) over the labelled coordinates), in `space`
    pixels ("input": the network's; "original": each row's crop mapped back to the image).
    """

    name: str  # as competition.toml writes it
    space: Literal["input", "original"]
    error: Callable[[np.ndarray], np.ndarray]  # per coordinate, of pred - truth (>= 0)
    aggregate: Callable[[Any], Any]  # the mean error -> the score (np.sqrt for RMSE)
    lightgbm: str  # LightGBM's objective and metric for the same per-coordinate error
    # How a coordinate scale s (metric px per input px) enters the error: error(s * d) =
    # s**scale_power * error(d), the fit weight of a row whose input-pixel error is d.
    scale_power: int
    nme: bool = False  # evaluate() adds NME beside it (where options.nme_points is set)
    greater_is_better: bool = False

    def __call__(self, pred: np.ndarray, truth: np.ndarray) -> float:
        """The score over every labelled coordinate (NaN if none is labelled)."""
        labelled = _check(pred, truth)
        if not labelled.any():
            return float("nan")
        return float(self.aggregate(np.mean(self.error(pred[labelled] - truth[labelled]))))

    def in_space(self, data: KeypointData, points: np.ndarray) -> np.ndarray:
        """(N, K, 2) input-pixel `points` of `data`'s rows in the pixels this metric scores."""
        return data.to_original_coords(points) if self.space == ORIGINAL else points

    def scale_weight(self, scale: np.ndarray) -> np.ndarray:
        """The weight of an input-pixel error at coordinate scale `scale` (see scale_power)."""
        return scale**self.scale_power

    def as_loss(self, score: float) -> float:
        """`score` as a loss to minimise (AutoGluon's `convert_score_to_error`): negated for a
        metric where greater is better; NaN (nothing scored) ranks last."""
        if np.isnan(score):
            return float("inf")
        return -float(score) if self.greater_is_better else float(score)


RMSE = Metric("rmse", INPUT, _squared, np.sqrt, lightgbm="l2", scale_power=2)
MAE = Metric("mae", ORIGINAL, np.abs, _as_is, lightgbm="l1", scale_power=1, nme=True)
METRICS: dict[str, Metric] = {m.name: m for m in (RMSE, MAE)}


def get_metric(metric: str | Metric, config: str | Path = CONFIG_NAME) -> Metric:
    """The `Metric` a competition.toml `metric` name stands for (a Metric is returned as is);
    an unknown name is a one-line error naming `config`'s field."""
    if isinstance(metric, Metric):
        return metric
    if metric not in METRICS:
        raise KitError(
            f"metric = {metric!r} is not a known metric",
            path=config,
            hint=f"the `metric` field is one of {', '.join(METRICS)}",
        )
    return METRICS[metric]


def metric_for(comp: Competition) -> Metric:
    """The competition's `Metric`."""
    return get_metric(comp.metric, comp.root / CONFIG_NAME)


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Root mean squared error over every labelled coordinate (NaN if none is labelled)."""
    return RMSE(pred, truth)


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error over every labelled coordinate (NaN if none is labelled)."""
    return MAE(pred, truth)


def per_keypoint(fn, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """`fn` (a Metric; rmse or mae) on each keypoint column of (N, K, 2) arrays: shape (K,)."""
    return np.array([fn(pred[:, k], truth[:, k]) for k in range(truth.shape[1])])


def eye_distance(truth: np.ndarray, norm_pair: tuple[int, int]) -> np.ndarray:
    """(N,) distance between the truth points `norm_pair` (NaN where either is unlabelled)."""
    a, b = norm_pair
    return np.linalg.norm(truth[:, a] - truth[:, b], axis=-1)


def nme_per_face(
    pred: np.ndarray, truth: np.ndarray, norm: np.ndarray, unit: float = 100.0
) -> np.ndarray:
    """(N,) per face: mean point-to-point distance over labelled points / `norm`, times `unit`
    (100: in %, the default; 1: a fraction).

    NaN for a face with no labelled point or no positive normaliser.
    """
    _check(pred, truth)
    dist = np.linalg.norm(pred - truth, axis=-1)  # (N, K), NaN where unlabelled
    labelled = np.isfinite(dist)
    count = labelled.sum(axis=1)
    total = np.where(labelled, dist, 0.0).sum(axis=1)
    ok = (count > 0) & (norm > 0)
    out = np.full(len(truth), np.nan)
    out[ok] = unit * total[ok] / count[ok] / norm[ok]
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
    nme: float | None = None  # in %, for a metric with NME (mae) and options.nme_points
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
    """The NME normaliser's points (options.nme_points) as columns of `keypoints`, if both
    are there."""
    names = comp.options.get("nme_points")
    if not names:
        return None
    idx = [comp.keypoint_names.index(n) for n in names]
    if not all(k in keypoints for k in idx):
        return None
    return keypoints.index(idx[0]), keypoints.index(idx[1])


def _in_metric_space(
    comp: Competition, pred: np.ndarray, data: KeypointData, keypoints: list[int] | None
) -> tuple[Metric, np.ndarray, np.ndarray, list[int]]:
    """(metric, pred, truth, keypoints): pred and truth as float64 in the metric's pixels."""
    metric = metric_for(comp)
    keypoints = list(range(comp.num_keypoints)) if keypoints is None else list(keypoints)
    truth = data.keypoints[:, keypoints].astype(np.float64)
    pred = np.asarray(pred, np.float64)
    return metric, metric.in_space(data, pred), metric.in_space(data, truth), keypoints


def evaluate(
    comp: Competition,
    pred: np.ndarray,
    data: KeypointData,
    keypoints: list[int] | None = None,
) -> Scores:
    """Score (N, K', 2) input-pixel predictions of `keypoints` (default all) against `data`:
    overall, per keypoint, per named subset (group) and, for a metric with NME where
    options.nme_points names the normaliser (ibug-68, imm-58), NME."""
    metric, pred, truth, keypoints = _in_metric_space(comp, pred, data, keypoints)
    names = [comp.keypoint_names[k] for k in keypoints]
    groups = _groups(comp, keypoints)
    scores = Scores(
        metric=metric.name,
        overall=metric(pred, truth),
        per_keypoint=dict(zip(names, per_keypoint(metric, pred, truth).tolist(), strict=True)),
        per_group={g: metric(pred[:, cols], truth[:, cols]) for g, cols in groups.items()},
        rows=len(truth),
        coordinates=int(np.isfinite(truth).sum()),
    )
    pair = _nme_pair(comp, keypoints) if metric.nme else None
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
    metric, pred, truth, _ = _in_metric_space(comp, pred, data, keypoints)
    return metric(pred, truth)
