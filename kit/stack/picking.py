"""Per keypoint, the candidate that CV picks (the best single model or a meta-learner), and
the comparison table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.metrics import Metric, metric_for
from kit.stack.bases import BaseModel

BLEND, RIDGE, LIGHTGBM = "mean blend", "ridge stack", "lightgbm stack"


PICKED = "stack (picked per keypoint)"


# The pick per keypoint is between the best single base model (as it stands: its own OOF and
# test predictions) and the two meta-learners, the simplest first: a later candidate must beat
# the current pick by PICK_MARGIN (relative CV loss; the "one standard error" idea). With the
# best single model first, the stack can keep it wherever the meta-learners do not clearly
# win, so the stack's CV is not worse than the best single model's (up to nested-CV noise).
# The other base models and the blend stay in the table but are not candidates: the ridge
# already shrinks towards the blend, and picking among more close candidates per fold added
# more selection noise than it saved (docs/benchmarks.md, "Stacking").
PICK_FROM = (RIDGE, LIGHTGBM)


PICK_MARGIN = 0.005

Losses = tuple[np.ndarray, np.ndarray]  # (N, K) summed loss, (N, K) labelled coordinates


def single_label(name: str) -> str:
    """How the table and the picks name base model `name` as the best single model."""
    return f"best single ({name})"


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
    later (more complex: the best single model, ridge, LightGBM) must beat the current pick by
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


@dataclass(frozen=True)
class Pick:
    """Per stacked keypoint (competition index), the candidate picked on some rows."""

    labels: dict[int, str]  # the candidate's name: a meta-learner or single_label(base)
    methods: dict[int, str]  # the method whose OOF and test arrays it uses
    best: BaseModel  # the best single model on those rows


def pick_over(
    metric: Metric,
    bases: list[BaseModel],
    covered: list[int],
    losses: dict[str, Losses],
    rows: np.ndarray,
) -> Pick:
    """The pick per keypoint over `rows` (`losses`: per base model name and per PICK_FROM)."""
    best = best_base(metric, bases, covered, losses, rows)
    candidates = pick_candidates(best, losses)
    names, choice = pick_methods({n: c[1] for n, c in candidates.items()}, rows)
    labels = {k: names[choice[k]] for k in covered}
    return Pick(labels, {k: candidates[n][0] for k, n in labels.items()}, best)


def best_base(
    metric: Metric,
    bases: list[BaseModel],
    covered: list[int],
    losses: dict[str, Losses],
    rows: np.ndarray,
) -> BaseModel:
    """The base model with the best CV under `metric` over `rows`, among those predicting every
    stacked keypoint (else among all of them). Chosen on the pick's rows only: for fold f's
    nested score, fold f's labels must not decide which model is the best single."""
    full = [b for b in bases if set(covered) <= set(b.keypoints)] or bases
    return min(full, key=lambda b: metric.as_loss(_score(metric, losses[b.name], rows, b)))


def _score(metric: Metric, losses: Losses, rows: np.ndarray, base: BaseModel) -> float:
    """The metric's score of `base` over `rows` and its keypoints (NaN: nothing labelled)."""
    cols = list(base.keypoints)
    loss, count = losses[0][rows][:, cols].sum(), losses[1][rows][:, cols].sum()
    return float(metric.aggregate(loss / count)) if count else float("nan")


def pick_candidates(best: BaseModel, losses: dict[str, Losses]) -> dict[str, tuple[str, Losses]]:
    """Candidate name -> (the method whose arrays it uses, its losses), simplest first: the best
    single model (nothing fitted), then PICK_FROM. A keypoint the best single model does not
    predict gets an infinite loss: it is never picked there."""
    loss, count = losses[best.name]
    missing = np.ones(loss.shape[1], bool)
    missing[list(best.keypoints)] = False
    single = (np.where(missing, np.inf, loss), count)
    return {single_label(best.name): (best.name, single)} | {m: (m, losses[m]) for m in PICK_FROM}


def comparison_table(
    comp: Competition, bases: list[BaseModel], covered: list[int], scores: dict, best: str
) -> pd.DataFrame:
    """One row per method (base models, blend, best single, ridge, LightGBM, picked); columns:
    keypoints predicted, overall score, and one score per keypoint (NaN = not predicted)."""
    rows = []
    labels = [(b.name, b.name, "base") for b in bases]
    labels += [(BLEND, BLEND, "blend"), (single_label(best), best, "best single")]
    labels += [(RIDGE, RIDGE, "stack"), (LIGHTGBM, LIGHTGBM, "stack"), (PICKED, PICKED, "stack")]
    for label, key, kind in labels:
        s = scores[key]
        row = {"method": label, "kind": kind, "keypoints": len(s.per_keypoint)}
        row["overall"] = s.overall
        for k in covered:
            row[comp.keypoint_names[k]] = s.per_keypoint.get(comp.keypoint_names[k], np.nan)
        rows.append(row)
    return pd.DataFrame(rows)
