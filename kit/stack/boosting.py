"""The LightGBM stack per coordinate, boosting from an out-of-fold ridge anchor, nested CV."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kit.metrics import Metric, get_metric
from kit.stack.fitted import CoordinateMeta, FoldMeta
from kit.stack.nested import MIN_META_ROWS, MetaLeakError, check_meta_rows, fold_rows
from kit.stack.picking import BLEND, LIGHTGBM, RIDGE
from kit.stack.ridge import fit_ridge

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


@dataclass(frozen=True)
class StackSettings:
    features: frozenset[str] = frozenset()
    lightgbm: dict[str, Any] = field(default_factory=lambda: dict(LIGHTGBM_DEFAULTS))
    # LightGBM threads. The meta-data is a few thousand rows by a few columns, where one
    # thread is several times faster than many (thread start-up dominates each small fit).
    threads: int = 1
    workers: int = 0  # coordinates fitted at once (0: one per CPU); results do not depend on it


@dataclass
class CoordinateResult:
    """Every method's OOF (N,) and test (M,) predictions of one coordinate."""

    oof: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    ridge_weights: list[list[float]]  # per fold, effective weight of each base model
    fallbacks: int = 0  # folds with too few labelled rows: ridge and LightGBM = the blend
    rounds: list[int] = field(default_factory=list)  # LightGBM rounds per fold (0 = ridge)
    train_rows: list[int] = field(default_factory=list)  # labelled training rows per fold
    model: CoordinateMeta | None = None  # the fitted fold meta-models (they made `test`)


def _lightgbm_params(settings: StackSettings, metric: Metric, rows: int) -> dict[str, Any]:
    loop = ("num_boost_round", "early_stopping_rounds")  # not LightGBM parameters here
    params = {k: v for k, v in settings.lightgbm.items() if k not in loop}
    params.update(
        objective=metric.lightgbm,
        metric=metric.lightgbm,
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


def _anchor_loss(y: np.ndarray, anchor: np.ndarray, weight: np.ndarray, metric: Metric) -> float:
    per = metric.error(y - anchor)
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
    metric: Metric,
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
    metric: Metric | str,
    settings: StackSettings,
) -> CoordinateResult:
    """Blend, ridge and LightGBM OOF (nested over `folds`) and test predictions of one
    coordinate. x: (N, M) base predictions; y: (N,) truth, NaN = missing (not used); `metric`:
    the competition's Metric or its name."""
    metric = get_metric(metric)
    blend = x.mean(axis=1)
    usable = np.isfinite(y)
    oof = {RIDGE: np.full(len(y), np.nan), LIGHTGBM: np.full(len(y), np.nan)}
    params = _lightgbm_params(settings, metric, int(usable.sum()))
    chosen_rounds: list[int] = []
    counts: list[int] = []
    weights: list[list[float]] = []
    fold_models: list[FoldMeta] = []
    fallbacks = 0
    for fold in np.unique(folds):
        train, predict = fold_rows(folds, int(fold), usable)
        check_meta_rows(folds, int(fold), train, predict)
        counts.append(len(train))
        if len(train) < MIN_META_ROWS:
            for method in (RIDGE, LIGHTGBM):
                oof[method][predict] = blend[predict]
            weights.append([round(1 / x.shape[1], 4)] * x.shape[1])
            fold_models.append(FoldMeta(None))
            fallbacks += 1
            continue
        ridge = fit_ridge(x[train], y[train], blend[train], weight[train])
        weights.append(ridge.weights().round(4).tolist())
        oof[RIDGE][predict] = ridge.predict(x[predict], blend[predict])

        inner = _inner_anchor(x, y, blend, weight, folds, int(fold), train)
        anchor = blend.copy()
        if inner is None:  # an inner fold too small for a ridge: boost from the blend
            start = blend[predict]
        else:  # boost from the ridge: out-of-fold for the training rows
            anchor[train] = inner
            start = oof[RIDGE][predict]
        rounds = choose_rounds(design, y, anchor, weight, folds, train, params, settings, metric)
        chosen_rounds.append(rounds)
        booster = None
        if rounds == 0:  # no tree helps in the inner CV: the anchor alone (usually the ridge)
            oof[LIGHTGBM][predict] = start
        else:
            booster = _fit_lightgbm(
                design[train], y[train], anchor[train], weight[train], params, rounds
            )
            oof[LIGHTGBM][predict] = start + booster.predict(design[predict])
        fold_models.append(FoldMeta(ridge, inner is not None, booster))
    # The test predictions come from the fitted models, as `kit predict` computes them later
    # from the saved ones: the same code, so the same numbers.
    model = CoordinateMeta(fold_models)
    test = model.predict(x_test, design_test)
    oof[BLEND] = blend
    return CoordinateResult(oof, test, weights, fallbacks, chosen_rounds, counts, model)
