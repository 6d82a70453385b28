"""What a run trains on: the keypoint columns, the sub-models, and how missing labels are handled.

Target sets (``--target-set``):

- ``masked`` (default): one model, every row, masked loss (only labelled coordinates count).
- ``complete``: one model on the rows that have every selected keypoint.
- ``impute``: the seed's linear imputation (see `LinearImputer`), fitted on the training-fold
  rows only, then the masked loss on what is still missing.
- ``sources``: one network, one head per label source that the competition declares in
  competition.toml's ``[sources]``; each row learns from and is predicted by its own source's
  head, the masked loss within it (kit.training.sources).
- a target set that the competition declares in competition.toml's ``[target_sets]``
  (`kit.competition.SubsetTargetSet`): a pair of models, one on every row that has all of a
  subset's keypoints, one on complete rows; the merged prediction takes the subset's keypoints
  from the first and the rest from the second.

Pseudo labels (train setting ``pseudo``, a set of `kit pseudo`) are another way to fill what is
missing: `pseudo_targets` builds one fold's labels and per-keypoint loss weights from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kit.competition import Competition
from kit.errors import KitError
from kit.training.sources import Heads

TARGET_SETS = ("masked", "complete", "impute", "sources")  # and each competition's own
DEFAULT_R2_THRESHOLD = 0.45
# A keypoint predicts a missing one only if it is present in this share of the rows to fill.
PREDICTOR_PRESENCE = 0.95


def resolve_keypoints(comp: Competition, spec: str | None) -> list[int]:
    """All keypoints (None), a named subset from competition.toml, or a comma list of names."""
    if spec is None or spec.strip() in ("", "all"):
        return list(range(comp.num_keypoints))
    indices = comp.subset_indices(spec.strip())
    if len(set(indices)) != len(indices):
        raise KitError(f"--keypoints {spec!r} names a keypoint twice")
    return sorted(indices)


@dataclass(frozen=True)
class SubModel:
    """One network of a run: trained on `keypoints`, filling `contributes` in the merged output.

    With `heads` (target set sources) the network has one block of outputs per label source;
    `columns` addresses them in widened labels and `Heads.pick` turns its output into
    `keypoints` for rows of known sources.
    """

    name: str
    keypoints: tuple[int, ...]
    contributes: tuple[int, ...]
    complete_rows_only: bool = False
    heads: Heads | None = None

    @property
    def columns(self) -> tuple[int, ...]:
        """The label columns the network's outputs learn: `keypoints`, or with heads the
        columns of widened labels (kit.training.sources)."""
        return self.keypoints if self.heads is None else self.heads.columns

    def pick(self, pred: np.ndarray, sources: np.ndarray | None) -> np.ndarray:
        """Network output (n, len(columns), 2) of rows of `sources` -> (n, len(keypoints), 2)
        (without heads: as it is)."""
        if self.heads is None:
            return pred
        if sources is None:
            raise ValueError(f"sub-model {self.name} has heads: predictions need row sources")
        return self.heads.pick(pred, sources, self.keypoints)

    def training_rows(self, keypoints: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The subset of `rows` this sub-model learns from (at least one usable label)."""
        labelled = np.isfinite(keypoints[rows][:, list(self.keypoints)]).all(axis=2)
        keep = labelled.all(axis=1) if self.complete_rows_only else labelled.any(axis=1)
        return rows[keep]


@dataclass(frozen=True)
class TargetPlan:
    target_set: str
    keypoints: tuple[int, ...]  # competition indices: the columns of oof.npy / test.npy
    submodels: tuple[SubModel, ...]
    impute: bool = False

    def merge(self, predictions: dict[str, np.ndarray]) -> np.ndarray:
        """Sub-model predictions (each (N, len(sub.keypoints), 2)) -> (N, len(keypoints), 2)."""
        n = len(next(iter(predictions.values())))
        out = np.full((n, len(self.keypoints), 2), np.nan, np.float32)
        column = {k: i for i, k in enumerate(self.keypoints)}
        for sub in self.submodels:
            pred = predictions[sub.name]
            for k in sub.contributes:
                out[:, column[k]] = pred[:, sub.keypoints.index(k)]
        return out

    @classmethod
    def from_description(cls, described: dict) -> TargetPlan:
        """The plan that `describe` wrote (a run manifest's ``plan``)."""
        subs = tuple(
            SubModel(
                s["name"],
                tuple(s["keypoints"]),
                tuple(s["contributes"]),
                bool(s["complete_rows_only"]),
                Heads.from_description(s["heads"]) if "heads" in s else None,
            )
            for s in described["submodels"]
        )
        target_set = described["target_set"]
        return cls(target_set, tuple(described["keypoints"]), subs, target_set == "impute")

    @property
    def heads(self) -> Heads | None:
        """The label sources' heads (target set sources), else None."""
        return next((s.heads for s in self.submodels if s.heads is not None), None)

    def describe(self) -> dict:
        """The plan as JSON (a run manifest's ``plan``; hashed into the run id). Plans without
        heads describe themselves as they did before heads existed."""
        return {
            "target_set": self.target_set,
            "keypoints": list(self.keypoints),
            "submodels": [_describe_submodel(s) for s in self.submodels],
        }


def _describe_submodel(sub: SubModel) -> dict:
    described = {
        "name": sub.name,
        "keypoints": list(sub.keypoints),
        "contributes": list(sub.contributes),
        "complete_rows_only": sub.complete_rows_only,
    }
    if sub.heads is not None:
        described["heads"] = sub.heads.describe()
    return described


def target_set_names(comp: Competition) -> list[str]:
    """kit's target sets, then those the competition declares."""
    return [*TARGET_SETS, *(name for name in comp.target_sets if name not in TARGET_SETS)]


def plan_targets(comp: Competition, target_set: str = "masked", keypoints: str | None = None):
    """The `TargetPlan` for a target set and an optional keypoint subset."""
    if target_set not in target_set_names(comp):
        raise KitError(
            f"unknown target set {target_set!r}",
            hint=f"valid: {', '.join(target_set_names(comp))}",
        )
    selected = tuple(resolve_keypoints(comp, keypoints))
    if target_set not in TARGET_SETS:
        return _plan_subset_pair(comp, target_set, selected, keypoints)
    if target_set == "sources":
        if len(selected) != comp.num_keypoints:
            raise KitError("--target-set sources trains all keypoints; drop --keypoints")
        sub = SubModel("main", selected, selected, heads=Heads.of(comp))
        return TargetPlan(target_set, selected, (sub,))
    sub = SubModel("main", selected, selected, complete_rows_only=target_set == "complete")
    return TargetPlan(target_set, selected, (sub,), impute=target_set == "impute")


def _plan_subset_pair(
    comp: Competition, target_set: str, selected: tuple[int, ...], spec: str | None
) -> TargetPlan:
    """A `SubsetTargetSet` of the competition: both models on complete rows only (of the
    subset, of every keypoint)."""
    pair = comp.target_sets[target_set]
    if pair.subset not in comp.subsets:
        raise KitError(
            f"target set {target_set} needs a subset named {pair.subset!r} in {comp.name}'s "
            "competition.toml",
            hint="use --target-set masked",
        )
    if spec is not None and len(selected) != comp.num_keypoints:
        raise KitError(f"--target-set {target_set} trains all keypoints; drop --keypoints")
    part = tuple(sorted(comp.subset_indices(pair.subset)))
    rest = tuple(k for k in selected if k not in part)
    return TargetPlan(
        target_set,
        selected,
        (
            SubModel(pair.subset_model, part, part, complete_rows_only=True),
            SubModel(pair.full_model, selected, rest, complete_rows_only=True),
        ),
    )


@dataclass
class KeypointFit:
    """Linear model of one keypoint's (x, y) from the coordinates of `predictors`."""

    predictors: tuple[int, ...]
    coef: np.ndarray  # (1 + 2 * len(predictors), 2)
    r2: float  # leave-one-out R², the worse of x and y
    rows: int


@dataclass
class LinearImputer:
    """The seed's imputation: fill a missing keypoint from correlated present keypoints.

    For each keypoint k that is missing somewhere, the predictors are the keypoints present in
    nearly every row that lacks k (for FKD: the four keypoints that nearly every row has). An
    ordinary least-squares fit on the rows that have k and all predictors gives k's (x, y); it
    is used only where its leave-one-out R² (the worse of x and y, so no overfit fit passes)
    reaches `threshold`.
    """

    threshold: float = DEFAULT_R2_THRESHOLD
    fits: dict[int, KeypointFit] = field(default_factory=dict)

    @classmethod
    def fit(cls, keypoints: np.ndarray, threshold: float = DEFAULT_R2_THRESHOLD) -> LinearImputer:
        """Fit on (N, K, 2) training-fold labels only (NaN = missing)."""
        imputer = cls(threshold=threshold)
        present = np.isfinite(keypoints).all(axis=2)
        for k in range(keypoints.shape[1]):
            fit = _fit_keypoint(keypoints, present, k)
            if fit is not None:
                imputer.fits[k] = fit
        return imputer

    def used(self) -> list[int]:
        return sorted(k for k, f in self.fits.items() if f.r2 >= self.threshold)

    def transform(self, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A copy with missing keypoints filled where allowed, and the (N, K) filled mask."""
        out = keypoints.copy()
        present = np.isfinite(keypoints).all(axis=2)
        filled = np.zeros(present.shape, bool)
        for k in self.used():
            fit = self.fits[k]
            rows = ~present[:, k] & present[:, list(fit.predictors)].all(axis=1)
            if rows.any():
                out[rows, k] = _design(keypoints[rows], fit.predictors) @ fit.coef
                filled[rows, k] = True
        return out, filled

    def summary(self, names: tuple[str, ...]) -> dict[str, dict]:
        return {
            names[k]: {
                "r2": round(f.r2, 4),
                "used": f.r2 >= self.threshold,
                "rows": f.rows,
                "predictors": [names[p] for p in f.predictors],
            }
            for k, f in sorted(self.fits.items())
        }


def _design(keypoints: np.ndarray, predictors: tuple[int, ...]) -> np.ndarray:
    flat = keypoints[:, list(predictors)].reshape(len(keypoints), -1).astype(np.float64)
    return np.hstack([np.ones((len(keypoints), 1)), flat])


def _fit_keypoint(keypoints: np.ndarray, present: np.ndarray, k: int) -> KeypointFit | None:
    missing = ~present[:, k]
    if not missing.any():
        return None
    share = present[missing].mean(axis=0)
    predictors = tuple(int(j) for j in np.flatnonzero(share >= PREDICTOR_PRESENCE) if j != k)
    if not predictors:
        return None
    rows = present[:, k] & present[:, list(predictors)].all(axis=1)
    x = _design(keypoints[rows], predictors)
    if len(x) < x.shape[1] + 5:  # too few rows to estimate the fit (LOO R² guards the rest)
        return None
    y = keypoints[rows, k].astype(np.float64)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return KeypointFit(predictors, coef, _loo_r2(x, y, coef), int(rows.sum()))


def _loo_r2(x: np.ndarray, y: np.ndarray, coef: np.ndarray) -> float:
    """Leave-one-out R² of an OLS fit via the hat matrix (PRESS), the worse of the columns."""
    hat = np.einsum("ij,ji->i", x, np.linalg.pinv(x))
    press = (y - x @ coef) / np.maximum(1.0 - hat, 1e-9)[:, None]
    total = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    r2 = 1.0 - (press**2).sum(axis=0) / np.maximum(total, 1e-12)
    return float(r2.min())


@dataclass(frozen=True)
class PseudoTargets:
    """What one fold trains on with pseudo labels: the training split's N rows, then the test
    split's M rows (row N + i is test row i).

    keypoints: (N + M, K, 2) the truth; in the fold's training rows also the pseudo labels
               where the truth is missing; the test rows' pseudo labels; NaN elsewhere
    weights:   (N + M, K) float32 loss weights: 1 for a true label, `weight` for a pseudo one,
               0 where there is no label
    test_rows: the test rows (N + i) with at least one pseudo label, to train on
    filled:    how many keypoints of the training rows took a pseudo label
    """

    keypoints: np.ndarray
    weights: np.ndarray
    test_rows: np.ndarray
    filled: int


def pseudo_targets(
    truth: np.ndarray,
    train_rows: np.ndarray,
    train_labels: np.ndarray,
    test_labels: np.ndarray,
    weight: float,
) -> PseudoTargets:
    """One fold's labels and weights from the truth (N, K, 2) and a pseudo-label set's labels
    for this fold: `train_labels` (N, K, 2), `test_labels` (M, K, 2) (NaN = none).

    Only `train_rows` take pseudo labels, and only where their truth is missing: a true label
    is never replaced, and every other row (the fold's validation rows) keeps its truth alone.
    With `weight` 0 no pseudo label is used at all (the labels are exactly the truth's).
    """
    n, k = truth.shape[:2]
    present = np.isfinite(truth).all(axis=2)
    keypoints = np.concatenate([truth, np.full(test_labels.shape, np.nan)]).astype(np.float32)
    weights = np.zeros((n + len(test_labels), k), np.float32)
    weights[:n][present] = 1.0
    filled = 0
    if weight > 0:
        rows = np.asarray(train_rows, np.int64)
        fill = ~present[rows] & np.isfinite(train_labels[rows]).all(axis=2)
        block = keypoints[rows]
        block[fill] = train_labels[rows][fill]
        keypoints[rows] = block
        block_w = weights[rows]
        block_w[fill] = weight
        weights[rows] = block_w
        filled = int(fill.sum())
        usable = np.isfinite(test_labels).all(axis=2)
        keypoints[n:][usable] = test_labels[usable]
        weights[n:][usable] = weight
    test_rows = n + np.flatnonzero((weights[n:] > 0).any(axis=1))
    return PseudoTargets(keypoints, weights, test_rows, filled)
