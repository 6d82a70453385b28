"""The stacking algorithm on arrays, with no file access: `stack_predictions`."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import DataError, KitError
from kit.metrics import evaluate, metric_for
from kit.progress import Event, OnEvent, ignore
from kit.stack.bases import BaseModel
from kit.stack.boosting import StackSettings, stack_coordinate
from kit.stack.features import FEATURE_SETS, Features, ImagePCA
from kit.stack.fitted import CoordinateMeta, FittedStack
from kit.stack.picking import (
    BLEND,
    LIGHTGBM,
    PICK_FROM,
    PICKED,
    RIDGE,
    comparison_table,
    pick_over,
    row_losses,
)
from kit.training.device import available_cpus


@dataclass
class StackOutcome:
    """Everything `stack_predictions` computes (no files)."""

    keypoints: list[int]  # competition indices covered by at least one base model
    oof: dict[str, np.ndarray]  # method -> (N, K, 2) over all keypoints (NaN = not covered)
    test: dict[str, np.ndarray]
    picked_oof: np.ndarray  # (N, K, 2): nested pick per fold
    picked_test: np.ndarray  # (M, K, 2): pick over all rows
    picks: dict[str, str]  # keypoint name -> candidate picked over all rows (single_label: a base)
    picks_per_fold: dict[int, dict[str, str]]
    best_single: str
    table: pd.DataFrame  # rows: methods; columns: overall + keypoint names
    scores: dict[str, dict[str, Any]]  # method -> kit.metrics Scores.to_dict()
    picked_methods: dict[str, str] = field(default_factory=dict)  # keypoint -> arrays used
    # keypoint -> axis -> fold -> effective weight of each base model predicting it
    ridge_weights: dict[str, list[list[list[float]]]] = field(default_factory=dict)
    # keypoint -> (axis, fold) fits that had too few rows and fell back to the blend
    fallbacks: dict[str, int] = field(default_factory=dict)
    # keypoint -> axis -> fold -> LightGBM rounds chosen by inner CV (0 = the ridge alone)
    rounds: dict[str, list[list[int]]] = field(default_factory=dict)
    fitted: FittedStack | None = None  # the meta-models, to predict new images (kit predict)


def stack_predictions(
    comp: Competition,
    data: KeypointData,
    test_images: np.ndarray,
    folds: np.ndarray,
    bases: list[BaseModel],
    settings: StackSettings | None = None,
    on_event: OnEvent = ignore,
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
    metric = metric_for(comp)
    weight = row_weight(comp, data)
    ridge_weights: dict[str, list[list[list[float]]]] = {}
    fallbacks: dict[str, int] = {}
    rounds: dict[str, list[list[int]]] = {}
    models: dict[tuple[int, int], CoordinateMeta] = {}
    total = 2 * len(covered)
    jobs = [(k, axis) for k in covered for axis in (0, 1)]

    def fit_coordinate(k: int, axis: int) -> Any:
        models = [i for i, b in enumerate(bases) if k in b.keypoints]
        x, design = train_f.coordinate(models, k, axis, settings.features)
        x_test, design_test = test_f.coordinate(models, k, axis, settings.features)
        return stack_coordinate(
            x,
            design,
            data.keypoints[:, k, axis].astype(np.float64),
            weight,
            folds,
            x_test,
            design_test,
            metric=metric,
            settings=settings,
        )

    # Coordinates are independent: fitted side by side (LightGBM and numpy release the GIL),
    # collected in order, so the result does not depend on the number of workers.
    with ThreadPoolExecutor(settings.workers or available_cpus()) as pool:
        futures = [pool.submit(fit_coordinate, k, axis) for k, axis in jobs]
        for step, ((k, axis), future) in enumerate(zip(jobs, futures, strict=True)):
            name = comp.keypoint_names[k]
            on_event(Event("stack", "step", step, total, f"{name} {'xy'[axis]}"))
            result = future.result()
            for method in (BLEND, RIDGE, LIGHTGBM):
                oof[method][:, k, axis] = result.oof[method]
                test[method][:, k, axis] = result.test[method]
            ridge_weights.setdefault(name, []).append(result.ridge_weights)
            rounds.setdefault(name, []).append(result.rounds)
            models[(k, axis)] = result.model
            if result.fallbacks:
                fallbacks[name] = fallbacks.get(name, 0) + result.fallbacks
    on_event(Event("stack", "step", total, total, "picking per keypoint"))
    outcome = _assemble(comp, data, folds, bases, covered, oof, test)
    outcome.ridge_weights, outcome.fallbacks, outcome.rounds = ridge_weights, fallbacks, rounds
    names = comp.keypoint_names
    outcome.fitted = FittedStack.of(
        names, bases, settings.features, pca, models, outcome.picked_methods
    )
    return outcome


def row_weight(comp: Competition, data: KeypointData) -> np.ndarray:
    """Per-row fit weight so that input-pixel errors count as metric-pixel errors do: the
    crop's scale (original px per input px) for MAE, its square for RMSE (1 for FKD); the
    metric's `scale_weight`."""
    a = data.to_original[:, :, :2].astype(np.float64)
    scale = np.sqrt(np.abs(np.linalg.det(a)))
    scale = np.where(scale > 0, scale, 1.0)
    return metric_for(comp).scale_weight(scale)


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
    metric = metric_for(comp)
    names = [*(b.name for b in bases), *PICK_FROM]  # the pick's candidates draw on these
    losses = {name: row_losses(comp, data, oof[name]) for name in names}
    picked_oof = np.full_like(oof[BLEND], np.nan)
    picks_per_fold: dict[int, dict[str, str]] = {}
    for fold in np.unique(folds):
        pick = pick_over(metric, bases, covered, losses, np.flatnonzero(folds != fold))
        rows = folds == fold
        for k in covered:
            picked_oof[rows, k] = oof[pick.methods[k]][rows, k]
        picks_per_fold[int(fold)] = {comp.keypoint_names[k]: pick.labels[k] for k in covered}
    pick = pick_over(metric, bases, covered, losses, np.arange(len(data)))
    picked_test = np.full_like(test[BLEND], np.nan)
    for k in covered:
        picked_test[:, k] = test[pick.methods[k]][:, k]
    picks = {comp.keypoint_names[k]: pick.labels[k] for k in covered}

    scores = {}
    for b in bases:
        scores[b.name] = evaluate(comp, oof[b.name][:, b.keypoints], data, list(b.keypoints))
    for method, pred in ((BLEND, oof[BLEND]), (RIDGE, oof[RIDGE]), (LIGHTGBM, oof[LIGHTGBM])):
        scores[method] = evaluate(comp, pred[:, covered], data, covered)
    scores[PICKED] = evaluate(comp, picked_oof[:, covered], data, covered)
    best = pick.best.name  # over all rows: the best single model the table reports
    return StackOutcome(
        keypoints=covered,
        oof=oof,
        test=test,
        picked_oof=picked_oof,
        picked_test=picked_test,
        picks=picks,
        picks_per_fold=picks_per_fold,
        best_single=best,
        picked_methods={comp.keypoint_names[k]: pick.methods[k] for k in covered},
        table=comparison_table(comp, bases, covered, scores, best),
        scores={name: s.to_dict() for name, s in scores.items()},
    )
