"""`kit stack` as a library call: a meta-learner per keypoint coordinate over the runs' OOF.

Inputs are finished runs (kit.training.runs): their OOF predictions (every row predicted by the
fold model that did not train on it) and their fold-averaged test predictions. For each
coordinate (keypoint k, axis x or y) the candidates are:

- each base model that predicts k, and their **mean blend**;
- a **ridge stack**: intercept + non-negative weights on the base predictions, shrunk towards
  the mean blend's equal weights (the penalty chosen per fit by leave-one-out error);
- a **LightGBM stack**: gradient-boosted trees that start from the ridge stack's prediction
  (LightGBM's ``init_score``) and learn only the non-linear correction. Trees fitting a
  near-linear blend from scratch would waste their splits on it; boosting from the ridge anchor
  lets them spend the splits on what ridge cannot do. The anchor of a training row is itself
  out-of-fold (inner folds), so the trees never see a residual that ridge fitted in-sample.

Every meta-model is scored by nested cross-validation on THE shared folds file: the meta-model
that predicts the rows of fold f is trained only on rows of the other folds
(`check_meta_rows` asserts it at every fit). A coordinate missing in a row is left out of that
coordinate's fits and scores only. The method used per keypoint is picked by CV: for the nested
score the pick for fold f uses the other folds' rows only, and the test predictions use the
pick over all rows. Test predictions average the fold meta-models, as the runs do.

Artifacts (content-addressed like runs) go to ``comp.workspace.stacks/<stack-id>/``:
manifest.json, oof.npy and test.npy (picked method; columns = manifest["keypoint_indices"]),
candidates.npz (every method's OOF and test arrays), table.csv (the comparison table).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import kit
from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import DataError, KitError
from kit.metrics import evaluate
from kit.training.runs import RunResult, git_commit, list_runs, load_run
from kit.workspace import (
    SavedPredictions,
    atomic_path,
    read_json,
    sha256_file,
    sha256_json,
    write_json,
    write_text,
)

STACK_FORMAT = 2  # bump when the artifacts' meaning changes: old stacks then get new ids
FEATURE_SETS = ("coords", "diffs", "image")
BLEND, RIDGE, LIGHTGBM = "mean blend", "ridge stack", "lightgbm stack"
PICKED = "stack (picked per keypoint)"
# A meta-model needs this many labelled rows to learn from; with fewer (a keypoint labelled in
# few rows of a small data set) that fold's ridge and LightGBM fall back to the mean blend.
MIN_META_ROWS = 30
# The pick per keypoint is between the two meta-learners, the simpler first: LightGBM must
# beat ridge by PICK_MARGIN (relative CV loss; the "one standard error" idea). Base models
# and the blend stay in the table but are not candidates: the ridge already shrinks towards
# the blend, and picking among more close candidates per fold added more selection noise
# than it saved (docs/benchmarks.md, "Stacking").
PICK_FROM = (RIDGE, LIGHTGBM)
PICK_MARGIN = 0.005
# "image" features: 6 statistics plus this many principal components of the training images
# (PCA fitted on at most PCA_ROWS of them).
IMAGE_COMPONENTS = 12
PCA_ROWS = 1000
# Ridge penalty grid, relative to the largest squared singular value of the design.
RIDGE_GRID = np.logspace(-6, 2, 17)
LIGHTGBM_DEFAULTS: dict[str, Any] = {
    "learning_rate": 0.05,
    "num_boost_round": 400,  # at most: the rounds are chosen by inner CV (0 = the ridge alone)
    "early_stopping_rounds": 30,
    "num_leaves": 15,
    "min_data_in_leaf": 30,
    "feature_fraction": 0.9,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "seed": 0,
}

Report = Callable[[int, int, str], None]  # (steps done, steps total, what is happening)


class MetaLeakError(KitError):
    """A meta-model would train on (or predict outside) the fold it is scored on."""


# ------------------------------------------------------------------------- inputs


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
            family=str(run.manifest.get("family", "")),
        )


def _widen(array: np.ndarray, keypoints: Sequence[int], num_keypoints: int) -> np.ndarray:
    """(N, K', 2) columns of `keypoints` -> (N, K, 2) with NaN elsewhere."""
    out = np.full((len(array), num_keypoints, 2), np.nan, np.float64)
    out[:, list(keypoints)] = array
    return out


@dataclass(frozen=True)
class StackSettings:
    features: frozenset[str] = frozenset()
    lightgbm: dict[str, Any] = field(default_factory=lambda: dict(LIGHTGBM_DEFAULTS))
    # LightGBM threads. The meta-data is a few thousand rows by a few columns, where one
    # thread is several times faster than many (thread start-up dominates each small fit).
    threads: int = 1


# ------------------------------------------------------------------------- the honesty check


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


# ------------------------------------------------------------------------- ridge


@dataclass
class RidgeFit:
    """prediction = blend + intercept + (x - x_mean) @ coef: weights shrunk towards the blend."""

    x_mean: np.ndarray
    coef: np.ndarray
    intercept: float
    penalty: float

    def predict(self, x: np.ndarray, blend: np.ndarray) -> np.ndarray:
        return blend + self.intercept + (x - self.x_mean) @ self.coef

    def weights(self) -> np.ndarray:
        """The effective weight of each base model (1/M + coef)."""
        return 1.0 / len(self.coef) + self.coef


def fit_ridge(x: np.ndarray, y: np.ndarray, blend: np.ndarray, weight: np.ndarray) -> RidgeFit:
    """Weighted ridge of y on base predictions `x` (n, M) with an intercept, every model's
    weight >= 0 and shrunk towards 1/M (the mean blend).

    The penalty comes from a grid by leave-one-out error of the unconstrained fit (hat-matrix
    shortcut on one SVD). Non-negative weights are Breiman's remedy for stacking correlated
    models: unconstrained, they take large opposite signs (e.g. -2, -1.7, +5) that fit the
    training rows and amplify any disagreement between the models on a new row.
    """
    w = weight / weight.sum()
    x_mean = w @ x
    target = y - blend
    intercept = float(w @ target)
    root = np.sqrt(weight)[:, None]
    xc = (x - x_mean) * root
    rc = (target - intercept) * root[:, 0]
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    if s.size == 0 or s[0] <= 1e-12:
        return RidgeFit(x_mean, np.zeros(x.shape[1]), intercept, 0.0)
    ur = u.T @ rc
    best: tuple[float, np.ndarray, float] | None = None
    for penalty in RIDGE_GRID * s[0] ** 2:
        shrink = s**2 / (s**2 + penalty)
        fitted = u @ (shrink * ur)
        leverage = (u**2) @ shrink + w  # + w: the intercept's share of each row's leverage
        press = float(np.sum(((rc - fitted) / np.maximum(1.0 - leverage, 1e-6)) ** 2))
        if best is None or press < best[0]:
            best = (press, vt.T @ (s / (s**2 + penalty) * ur), float(penalty))
    assert best is not None
    _, coef, penalty = best
    share = 1.0 / x.shape[1]
    if (coef + share).min() < 0:
        coef = _non_negative_ridge(xc, rc, penalty, share)
    return RidgeFit(x_mean, coef, intercept, penalty)


def _non_negative_ridge(xc: np.ndarray, rc: np.ndarray, penalty: float, share: float):
    """coef minimising |rc - xc coef|^2 + penalty |coef|^2 with coef >= -share (weights >= 0)."""
    from scipy.optimize import lsq_linear

    m = xc.shape[1]
    design = np.vstack([xc, np.sqrt(penalty) * np.eye(m)])
    target = np.concatenate([rc, np.zeros(m)])
    return lsq_linear(design, target, bounds=(-share, np.inf)).x


# ------------------------------------------------------------------------- features


def image_statistics(images: np.ndarray) -> np.ndarray:
    """(N, 6) per image: brightness, contrast, mean |dx|, mean |dy|, left-right and
    top-bottom brightness difference (cheap cues of lighting and pose)."""
    img = images.astype(np.float32) / 255.0
    half = img.shape[-1] // 2
    return np.stack(
        [
            img.mean(axis=(1, 2)),
            img.std(axis=(1, 2)),
            np.abs(np.diff(img, axis=2)).mean(axis=(1, 2)),
            np.abs(np.diff(img, axis=1)).mean(axis=(1, 2)),
            img[:, :, :half].mean(axis=(1, 2)) - img[:, :, -half:].mean(axis=(1, 2)),
            img[:, :half].mean(axis=(1, 2)) - img[:, -half:].mean(axis=(1, 2)),
        ],
        axis=1,
    ).astype(np.float64)


@dataclass(frozen=True)
class ImagePCA:
    """The leading principal components of the training images (fitted without labels):
    a dozen numbers per face that summarise pose, shape and lighting for the trees."""

    mean: np.ndarray  # (S*S,)
    components: np.ndarray  # (C, S*S)

    @classmethod
    def fit(cls, images: np.ndarray, n: int = IMAGE_COMPONENTS) -> ImagePCA:
        flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
        step = max(1, len(flat) // PCA_ROWS)  # every step-th row: enough for a dozen axes
        sample = flat[::step]
        mean = sample.mean(axis=0)
        _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
        return cls(mean, vt[: min(n, len(vt))])

    def transform(self, images: np.ndarray) -> np.ndarray:
        flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
        return ((flat - self.mean) @ self.components.T).astype(np.float64)


def image_features(images: np.ndarray, pca: ImagePCA) -> np.ndarray:
    """(N, 6 + C): `image_statistics` and the images' coordinates on `pca`'s axes."""
    return np.hstack([image_statistics(images), pca.transform(images)])


@dataclass
class Features:
    """Per split: each base model's predictions, their blend, and the optional extra columns."""

    base: np.ndarray  # (N, M, K, 2)
    blend: np.ndarray  # (N, K, 2): mean over the models that predict each keypoint
    image: np.ndarray  # (N, 6 + C) with the "image" features, else (N, 0)

    @classmethod
    def build(cls, preds: list[np.ndarray], images: np.ndarray, pca: ImagePCA | None) -> Features:
        base = np.stack(preds, axis=1)
        with warnings.catch_warnings():  # "mean of empty slice": a keypoint no model predicts
            warnings.simplefilter("ignore", RuntimeWarning)
            blend = np.nanmean(base, axis=1)
        stats = image_features(images, pca) if pca is not None else np.zeros((len(base), 0))
        return cls(base, blend, stats)

    def coordinate(
        self, models: list[int], k: int, axis: int, features: frozenset[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(base predictions (N, M_k), LightGBM design (N, d)) of one coordinate."""
        x = self.base[:, models, k, axis]
        blend = x.mean(axis=1)
        columns = [x]
        if "diffs" in features and len(models) > 1:
            columns += [x - blend[:, None], x.std(axis=1, keepdims=True)]
        if "coords" in features:
            others = self.blend.reshape(len(x), -1)
            keep = np.isfinite(others).any(axis=0)
            keep[2 * k + axis] = False  # this coordinate's own blend is in `x` already
            columns.append(others[:, keep])
        if "image" in features:
            columns.append(self.image)
        return x, np.hstack(columns)


# ------------------------------------------------------------------------- the meta-models


@dataclass
class CoordinateResult:
    """Every method's OOF (N,) and test (M,) predictions of one coordinate."""

    oof: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    ridge_weights: list[list[float]]  # per fold, effective weight of each base model
    fallbacks: int = 0  # folds with too few labelled rows: ridge and LightGBM = the blend
    rounds: list[int] = field(default_factory=list)  # LightGBM rounds per fold (0 = ridge)
    train_rows: list[int] = field(default_factory=list)  # labelled training rows per fold


def _lightgbm_params(settings: StackSettings, metric: str, rows: int) -> dict[str, Any]:
    loop = ("num_boost_round", "early_stopping_rounds")  # not LightGBM parameters here
    params = {k: v for k, v in settings.lightgbm.items() if k not in loop}
    params.update(
        objective="l1" if metric == "mae" else "l2",
        metric="l1" if metric == "mae" else "l2",
        num_threads=settings.threads,
        deterministic=True,
        force_col_wise=True,
        verbosity=-1,
    )
    # Small data: fewer rows per leaf (at most 1/20 of them), but never so few that a leaf
    # fits noise.
    params["min_data_in_leaf"] = max(10, min(int(params["min_data_in_leaf"]), rows // 20))
    return params


def _dataset(design: np.ndarray, y: np.ndarray, anchor: np.ndarray, weight: np.ndarray, **kw):
    import lightgbm

    return lightgbm.Dataset(
        design, label=y, weight=weight, init_score=anchor, params={"verbosity": -1}, **kw
    )


def _anchor_loss(y: np.ndarray, anchor: np.ndarray, weight: np.ndarray, metric: str) -> float:
    err = y - anchor
    per = err**2 if metric == "rmse" else np.abs(err)
    return float(np.sum(weight * per) / np.sum(weight))


def choose_rounds(
    design: np.ndarray,
    y: np.ndarray,
    anchor: np.ndarray,
    weight: np.ndarray,
    folds: np.ndarray,
    rows: np.ndarray,
    params: dict[str, Any],
    settings: StackSettings,
    metric: str,
) -> int:
    """Boosting rounds for the meta-model trained on `rows`, by CV over their own folds
    (early stopping on each held-out inner fold, curves averaged); 0 when no round beats the
    ridge anchor alone. `anchor` is indexed by row (N,)."""
    import lightgbm

    max_rounds = int(settings.lightgbm["num_boost_round"])
    patience = int(settings.lightgbm["early_stopping_rounds"])
    curves, sizes, baseline = [], [], []
    for inner in np.unique(folds[rows]):
        fit, held = rows[folds[rows] != inner], rows[folds[rows] == inner]
        if len(fit) < MIN_META_ROWS or len(held) == 0:
            continue
        train_set = _dataset(design[fit], y[fit], anchor[fit], weight[fit])
        held_set = _dataset(design[held], y[held], anchor[held], weight[held], reference=train_set)
        record: dict = {}
        lightgbm.train(
            params,
            train_set,
            num_boost_round=max_rounds,
            valid_sets=[held_set],
            callbacks=[
                lightgbm.record_evaluation(record),
                lightgbm.early_stopping(patience, verbose=False),
            ],
        )
        curves.append(np.asarray(next(iter(record["valid_0"].values())), np.float64))
        sizes.append(weight[held].sum())
        baseline.append(_anchor_loss(y[held], anchor[held], weight[held], metric))
    if not curves:
        return 0
    length = min(len(c) for c in curves)
    share = np.asarray(sizes) / np.sum(sizes)
    curve = np.sum([w * c[:length] for w, c in zip(share, curves, strict=True)], axis=0)
    start = float(share @ np.asarray(baseline))  # the same loss as LightGBM's l2 / l1 metric
    best = int(np.argmin(curve))
    return best + 1 if curve[best] < start else 0


def _fit_lightgbm(
    design: np.ndarray,
    y: np.ndarray,
    anchor: np.ndarray,
    weight: np.ndarray,
    params: dict[str, Any],
    rounds: int,
):
    import lightgbm

    return lightgbm.train(params, _dataset(design, y, anchor, weight), num_boost_round=rounds)


def _inner_anchor(
    x: np.ndarray,
    y: np.ndarray,
    blend: np.ndarray,
    weight: np.ndarray,
    folds: np.ndarray,
    fold: int,
    rows: np.ndarray,
) -> np.ndarray | None:
    """Ridge predictions for the training `rows` of the fold-`fold` meta-model, each from a
    ridge that did not see that row's (inner) fold: the LightGBM init_score. None when an
    inner fold has too few rows for a ridge (then the blend is the anchor throughout, so that
    training and prediction start from the same kind of anchor)."""
    anchor = np.empty(len(rows))
    for inner in np.unique(folds[rows]):
        fit_rows = rows[folds[rows] != inner]
        at = folds[rows] == inner
        check_meta_rows(folds, int(inner), fit_rows, rows[at])
        if fold in folds[fit_rows]:
            raise MetaLeakError(f"stack leak: an inner fit of fold {fold} uses fold {fold}")
        if len(fit_rows) < MIN_META_ROWS:
            return None
        ridge = fit_ridge(x[fit_rows], y[fit_rows], blend[fit_rows], weight[fit_rows])
        anchor[at] = ridge.predict(x[rows[at]], blend[rows[at]])
    return anchor


def stack_coordinate(
    x: np.ndarray,
    design: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray,
    folds: np.ndarray,
    x_test: np.ndarray,
    design_test: np.ndarray,
    *,
    metric: str,
    settings: StackSettings,
) -> CoordinateResult:
    """Blend, ridge and LightGBM OOF (nested over `folds`) and test predictions of one
    coordinate. x: (N, M) base predictions; y: (N,) truth, NaN = missing (not used)."""
    blend, blend_test = x.mean(axis=1), x_test.mean(axis=1)
    usable = np.isfinite(y)
    oof = {RIDGE: np.full(len(y), np.nan), LIGHTGBM: np.full(len(y), np.nan)}
    test = {RIDGE: np.zeros(len(x_test)), LIGHTGBM: np.zeros(len(x_test))}
    params = _lightgbm_params(settings, metric, int(usable.sum()))
    fold_ids = np.unique(folds)
    chosen_rounds: list[int] = []
    counts: list[int] = []
    weights: list[list[float]] = []
    fallbacks = 0
    for fold in fold_ids:
        train, predict = fold_rows(folds, int(fold), usable)
        check_meta_rows(folds, int(fold), train, predict)
        counts.append(len(train))
        if len(train) < MIN_META_ROWS:
            for method in (RIDGE, LIGHTGBM):
                oof[method][predict] = blend[predict]
                test[method] += blend_test / len(fold_ids)
            weights.append([round(1 / x.shape[1], 4)] * x.shape[1])
            fallbacks += 1
            continue
        ridge = fit_ridge(x[train], y[train], blend[train], weight[train])
        weights.append(ridge.weights().round(4).tolist())
        oof[RIDGE][predict] = ridge.predict(x[predict], blend[predict])
        ridge_test = ridge.predict(x_test, blend_test)
        test[RIDGE] += ridge_test / len(fold_ids)

        inner = _inner_anchor(x, y, blend, weight, folds, int(fold), train)
        anchor = blend.copy()
        if inner is None:  # an inner fold too small for a ridge: boost from the blend
            start, start_test = blend[predict], blend_test
        else:  # boost from the ridge: out-of-fold for the training rows
            anchor[train] = inner
            start, start_test = oof[RIDGE][predict], ridge_test
        rounds = choose_rounds(design, y, anchor, weight, folds, train, params, settings, metric)
        chosen_rounds.append(rounds)
        if rounds == 0:  # no tree helps in the inner CV: the anchor alone (usually the ridge)
            oof[LIGHTGBM][predict] = start
            test[LIGHTGBM] += start_test / len(fold_ids)
            continue
        booster = _fit_lightgbm(
            design[train], y[train], anchor[train], weight[train], params, rounds
        )
        oof[LIGHTGBM][predict] = start + booster.predict(design[predict])
        test[LIGHTGBM] += (start_test + booster.predict(design_test)) / len(fold_ids)
    oof[BLEND], test[BLEND] = blend, blend_test
    return CoordinateResult(oof, test, weights, fallbacks, chosen_rounds, counts)


# ------------------------------------------------------------------------- scoring and picking


def _metric_space(comp: Competition, data: KeypointData, pred: np.ndarray) -> np.ndarray:
    return data.to_original_coords(pred) if comp.metric == "mae" else pred


def row_losses(
    comp: Competition, data: KeypointData, pred: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) summed loss (squared for rmse, absolute for mae) over each labelled keypoint's
    coordinates in the metric's pixels, and (N, K) labelled-coordinate counts. A missing
    prediction of a labelled coordinate is an infinite loss."""
    truth = _metric_space(comp, data, data.keypoints.astype(np.float64))
    diff = _metric_space(comp, data, pred) - truth
    labelled = np.isfinite(truth)
    per = diff**2 if comp.metric == "rmse" else np.abs(diff)
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


# ------------------------------------------------------------------------- the whole stack


@dataclass
class StackOutcome:
    """Everything `stack_predictions` computes (no files)."""

    keypoints: list[int]  # competition indices covered by at least one base model
    oof: dict[str, np.ndarray]  # method -> (N, K, 2) over all keypoints (NaN = not covered)
    test: dict[str, np.ndarray]
    picked_oof: np.ndarray  # (N, K, 2): nested pick per fold
    picked_test: np.ndarray  # (M, K, 2): pick over all rows
    picks: dict[str, str]  # keypoint name -> method (over all rows)
    picks_per_fold: dict[int, dict[str, str]]
    best_single: str
    table: pd.DataFrame  # rows: methods; columns: overall + keypoint names
    scores: dict[str, dict[str, Any]]  # method -> kit.metrics Scores.to_dict()
    # keypoint -> axis -> fold -> effective weight of each base model predicting it
    ridge_weights: dict[str, list[list[list[float]]]] = field(default_factory=dict)
    # keypoint -> (axis, fold) fits that had too few rows and fell back to the blend
    fallbacks: dict[str, int] = field(default_factory=dict)
    # keypoint -> axis -> fold -> LightGBM rounds chosen by inner CV (0 = the ridge alone)
    rounds: dict[str, list[list[int]]] = field(default_factory=dict)


def stack_predictions(
    comp: Competition,
    data: KeypointData,
    test_images: np.ndarray,
    folds: np.ndarray,
    bases: list[BaseModel],
    settings: StackSettings | None = None,
    report: Report | None = None,
) -> StackOutcome:
    """Stack `bases` (OOF over `data`'s rows, test over `test_images`) on `folds`."""
    settings = settings or StackSettings()
    unknown = sorted(set(settings.features) - set(FEATURE_SETS))
    if unknown:
        raise KitError(
            f"unknown stack feature set {', '.join(unknown)}", hint=f"valid: {FEATURE_SETS}"
        )
    _check_bases(bases, len(data), len(test_images))
    pca = ImagePCA.fit(data.images) if "image" in settings.features else None
    train_f = Features.build([b.oof for b in bases], data.images, pca)
    test_f = Features.build([b.test for b in bases], test_images, pca)
    covered = [k for k in range(comp.num_keypoints) if any(k in b.keypoints for b in bases)]
    n, m, kk = len(data), len(test_images), comp.num_keypoints
    methods = [b.name for b in bases] + [BLEND, RIDGE, LIGHTGBM]
    oof = {name: np.full((n, kk, 2), np.nan) for name in methods}
    test = {name: np.full((m, kk, 2), np.nan) for name in methods}
    for b in bases:
        oof[b.name][:, list(b.keypoints)] = b.oof[:, list(b.keypoints)]
        test[b.name][:, list(b.keypoints)] = b.test[:, list(b.keypoints)]
    weight = row_weight(comp, data)
    ridge_weights: dict[str, list[list[list[float]]]] = {}
    fallbacks: dict[str, int] = {}
    rounds: dict[str, list[list[int]]] = {}
    total = 2 * len(covered)
    for step, (k, axis) in enumerate((k, a) for k in covered for a in (0, 1)):
        name = comp.keypoint_names[k]
        if report is not None:
            report(step, total, f"{name} {'xy'[axis]}")
        models = [i for i, b in enumerate(bases) if k in b.keypoints]
        x, design = train_f.coordinate(models, k, axis, settings.features)
        x_test, design_test = test_f.coordinate(models, k, axis, settings.features)
        result = stack_coordinate(
            x,
            design,
            data.keypoints[:, k, axis].astype(np.float64),
            weight,
            folds,
            x_test,
            design_test,
            metric=comp.metric,
            settings=settings,
        )
        for method in (BLEND, RIDGE, LIGHTGBM):
            oof[method][:, k, axis] = result.oof[method]
            test[method][:, k, axis] = result.test[method]
        ridge_weights.setdefault(name, []).append(result.ridge_weights)
        rounds.setdefault(name, []).append(result.rounds)
        if result.fallbacks:
            fallbacks[name] = fallbacks.get(name, 0) + result.fallbacks
    if report is not None:
        report(total, total, "picking per keypoint")
    outcome = _assemble(comp, data, folds, bases, covered, oof, test)
    outcome.ridge_weights, outcome.fallbacks, outcome.rounds = ridge_weights, fallbacks, rounds
    return outcome


def row_weight(comp: Competition, data: KeypointData) -> np.ndarray:
    """Per-row fit weight so that input-pixel errors count as metric-pixel errors do: the
    crop's scale (original px per input px) for MAE, its square for RMSE (1 for FKD)."""
    a = data.to_original[:, :, :2].astype(np.float64)
    scale = np.sqrt(np.abs(np.linalg.det(a)))
    scale = np.where(scale > 0, scale, 1.0)
    return scale**2 if comp.metric == "rmse" else scale


def _check_bases(bases: list[BaseModel], n: int, m: int) -> None:
    if not bases:
        raise KitError("nothing to stack: no base models", hint="train runs with `kit train`")
    names = [b.name for b in bases]
    if len(set(names)) != len(names):
        raise KitError(f"base model names repeat: {names}")
    for b in bases:
        if b.oof.shape[0] != n or b.test.shape[0] != m:
            raise DataError(
                f"base model {b.name} has {b.oof.shape[0]} OOF and {b.test.shape[0]} test rows; "
                f"the data has {n} and {m}",
                hint="retrain it on the current data",
            )
        cols = list(b.keypoints)
        for split, arr in (("OOF", b.oof), ("test", b.test)):
            if not np.isfinite(arr[:, cols]).all():
                raise DataError(
                    f"base model {b.name} has no {split} prediction for some rows",
                    hint="stack only runs trained on every fold",
                )


def _assemble(comp, data, folds, bases, covered, oof, test) -> StackOutcome:
    losses = {name: row_losses(comp, data, oof[name]) for name in PICK_FROM}
    picked_oof = np.full_like(oof[BLEND], np.nan)
    picks_per_fold: dict[int, dict[str, str]] = {}
    for fold in np.unique(folds):
        names, choice = pick_methods(losses, np.flatnonzero(folds != fold))
        rows = folds == fold
        for k in covered:
            picked_oof[rows, k] = oof[names[choice[k]]][rows, k]
        picks_per_fold[int(fold)] = {comp.keypoint_names[k]: names[choice[k]] for k in covered}
    names, choice = pick_methods(losses, np.arange(len(data)))
    picked_test = np.full_like(test[BLEND], np.nan)
    for k in covered:
        picked_test[:, k] = test[names[choice[k]]][:, k]
    picks = {comp.keypoint_names[k]: names[choice[k]] for k in covered}

    scores = {}
    for b in bases:
        scores[b.name] = evaluate(comp, oof[b.name][:, b.keypoints], data, list(b.keypoints))
    for method, pred in ((BLEND, oof[BLEND]), (RIDGE, oof[RIDGE]), (LIGHTGBM, oof[LIGHTGBM])):
        scores[method] = evaluate(comp, pred[:, covered], data, covered)
    scores[PICKED] = evaluate(comp, picked_oof[:, covered], data, covered)
    best = _best_single(bases, covered, scores)
    return StackOutcome(
        keypoints=covered,
        oof=oof,
        test=test,
        picked_oof=picked_oof,
        picked_test=picked_test,
        picks=picks,
        picks_per_fold=picks_per_fold,
        best_single=best,
        table=comparison_table(comp, bases, covered, scores, best),
        scores={name: s.to_dict() for name, s in scores.items()},
    )


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


# ------------------------------------------------------------------------- runs -> stack


@dataclass
class StackResult(SavedPredictions):
    """A stack folder; its `oof` holds the per-keypoint picked method's nested OOF."""

    stack_id: str
    path: Path
    manifest: dict[str, Any]
    table: pd.DataFrame
    reused: bool = False

    @property
    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.manifest["runs"]]


def run_group(comp: Competition, run: RunResult) -> str:
    """The family, plus the keypoint subset when the run predicts only some keypoints
    (an "eight" model competes with other eight models, not with full ones)."""
    family = str(run.manifest.get("family", "?"))
    keypoints = sorted(run.keypoints)
    if len(keypoints) == comp.num_keypoints:
        return family
    for name in comp.subsets:
        if sorted(comp.subset_indices(name)) == keypoints:
            return f"{family}[{name}]"
    return f"{family}[{len(keypoints)} keypoints]"


def run_problem(comp: Competition, run: RunResult, folds_sha: str, train_sha: str) -> str | None:
    """Why `run` cannot be stacked with the current folds and data, or None."""
    manifest = run.manifest
    run_folds = manifest.get("folds", {})
    if not run_folds.get("complete", False):
        trained, total = run_folds.get("trained", []), run_folds.get("total", "?")
        return f"it trained {len(trained)} of {total} folds (its OOF does not cover every row)"
    if run_folds.get("sha256") != folds_sha:
        return "it was trained on another folds file"
    if manifest.get("data", {}).get("train") != train_sha:
        return "it was trained on other cached data"
    return None


def select_runs(
    comp: Competition,
    run_ids: Iterable[str] | None = None,
    per_family: int = 2,
    warn: Callable[[str], None] | None = None,
) -> list[RunResult]:
    """Named runs (each must be stackable), or the best `per_family` stackable runs of each
    family and keypoint subset. Runs trained on only some folds (tuning trials, quick runs) are
    passed over; runs of another folds file or other data are skipped with a warning."""
    folds_sha, train_sha = _current_checksums(comp)
    if run_ids is not None:
        runs = [load_run(comp, run_id) for run_id in run_ids]
        for run in runs:
            problem = run_problem(comp, run, folds_sha, train_sha)
            if problem:
                raise KitError(
                    f"cannot stack run {run.run_id}: {problem}",
                    hint=f"retrain it with `kit train {comp.name} ...`",
                )
        return runs
    chosen: dict[str, list[RunResult]] = {}
    for run in list_runs(comp):  # best first
        if not run.manifest.get("folds", {}).get("complete", False):
            continue  # a tuning trial or a quick run: not meant for stacking
        problem = run_problem(comp, run, folds_sha, train_sha)
        if problem:
            if warn is not None:
                warn(f"skipping run {run.run_id}: {problem}")
            continue
        group = chosen.setdefault(run_group(comp, run), [])
        if len(group) < per_family:
            group.append(run)
    runs = [run for group in chosen.values() for run in group]
    if not runs:
        raise KitError(
            f"no finished runs of {comp.name} to stack",
            hint=f"train some first: `kit train {comp.name} MODEL` or `kit tune {comp.name}`",
        )
    return runs


def _current_checksums(comp: Competition) -> tuple[str, str]:
    ws = comp.workspace
    for path, stage in ((ws.folds_csv, "folds"), (ws.train_npz, "fetch")):
        if not path.is_file():
            raise DataError(f"missing {path.name}", path=path, hint=f"run `kit {stage}` first")
    return sha256_file(ws.folds_csv), sha256_file(ws.train_npz)


def make_stack_id(
    comp: Competition, runs: list[RunResult], settings: StackSettings, sums: tuple[str, str]
) -> str:
    identity = {
        "format": STACK_FORMAT,
        "runs": sorted(r.run_id for r in runs),
        "features": sorted(settings.features),
        "lightgbm": settings.lightgbm,
        "folds": sums[0],
        "train": sums[1],
        "test": sha256_file(comp.workspace.test_npz),
    }
    return f"stack-{sha256_json(identity)[:12]}"


def stack(
    comp: Competition,
    runs: list[RunResult] | None = None,
    *,
    per_family: int = 2,
    features: Iterable[str] = frozenset(),
    report: Report | None = None,
    warn: Callable[[str], None] | None = None,
    lightgbm_params: dict[str, Any] | None = None,
) -> StackResult:
    """Stack `runs` (default: the best `per_family` runs per family) and write the artifacts.

    The same runs, features and data give the same stack id, and a finished stack is reused.
    """
    from kit.data.folds import load_folds  # the folds stage owns the file format

    started = time.perf_counter()
    settings = StackSettings(
        features=frozenset(features), lightgbm={**LIGHTGBM_DEFAULTS, **(lightgbm_params or {})}
    )
    if runs is None:
        runs = select_runs(comp, per_family=per_family, warn=warn)
    else:
        runs = select_runs(comp, [r.run_id for r in runs])
    sums = _current_checksums(comp)
    stack_id = make_stack_id(comp, runs, settings, sums)
    path = comp.workspace.stacks / stack_id
    if (path / "manifest.json").is_file():
        return load_stack(comp, stack_id)

    data = KeypointData.load(comp.workspace.train_npz)
    test = KeypointData.load(comp.workspace.test_npz)
    folds = load_folds(comp, data)
    bases = [BaseModel.from_run(comp, run) for run in runs]
    outcome = stack_predictions(comp, data, test.images, folds, bases, settings, report)
    _write_stack(comp, path, stack_id, runs, settings, sums, outcome, started)
    return load_stack(comp, stack_id, reused=False)


def _write_stack(comp, path, stack_id, runs, settings, sums, outcome: StackOutcome, started):
    cols = outcome.keypoints
    with atomic_path(path / "oof.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, outcome.picked_oof[:, cols].astype(np.float32))
    with atomic_path(path / "test.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, outcome.picked_test[:, cols].astype(np.float32))
    arrays = {f"oof/{m}": a[:, cols] for m, a in outcome.oof.items()}
    arrays |= {f"test/{m}": a[:, cols] for m, a in outcome.test.items()}
    with atomic_path(path / "candidates.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: v.astype(np.float32) for k, v in arrays.items()})
    write_text(path / "table.csv", outcome.table.to_csv(index=False))
    picked = outcome.scores[PICKED]
    manifest = {
        "stack_id": stack_id,
        "competition": comp.name,
        "metric": comp.metric,
        "runs": [
            {
                "run_id": r.run_id,
                "family": r.manifest.get("family"),
                "group": run_group(comp, r),
                "keypoints": [comp.keypoint_names[k] for k in r.keypoints],
                "cv": r.cv_score,
            }
            for r in runs
        ],
        "features": sorted(settings.features),
        "lightgbm": settings.lightgbm,
        "keypoints": [comp.keypoint_names[k] for k in cols],
        "keypoint_indices": cols,
        "picks": outcome.picks,
        "picks_per_fold": {str(f): p for f, p in outcome.picks_per_fold.items()},
        "best_single": outcome.best_single,
        "cv": picked,
        "methods": outcome.scores,
        "ridge_weights": outcome.ridge_weights,
        "fallbacks_to_blend": outcome.fallbacks,
        "lightgbm_rounds": outcome.rounds,
        "min_meta_rows": MIN_META_ROWS,
        "folds": {"file": str(comp.workspace.folds_csv), "sha256": sums[0]},
        "data": {"train": sums[1], "test": sha256_file(comp.workspace.test_npz)},
        "seconds": time.perf_counter() - started,
        "kit": kit.__version__,
        "lightgbm_version": _lightgbm_version(),
        "git_commit": git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json(path / "manifest.json", manifest)  # last: the stack now counts as finished


def _lightgbm_version() -> str:
    import lightgbm

    return lightgbm.__version__


def load_stack(comp: Competition, stack_id: str, reused: bool = True) -> StackResult:
    """A finished stack by id."""
    path = comp.workspace.stacks / stack_id
    if not (path / "manifest.json").is_file():
        known = ", ".join(s.stack_id for s in list_stacks(comp)) or "none"
        raise KitError(f"no finished stack {stack_id!r} for {comp.name}", hint=f"stacks: {known}")
    table = pd.read_csv(path / "table.csv")
    return StackResult(stack_id, path, read_json(path / "manifest.json"), table, reused=reused)


def list_stacks(comp: Competition) -> list[StackResult]:
    """Every finished stack of `comp`, best CV first."""
    stacks = [
        load_stack(comp, p.parent.name)
        for p in sorted(comp.workspace.stacks.glob("*/manifest.json"))
    ]
    return sorted(stacks, key=lambda s: s.cv_score)
