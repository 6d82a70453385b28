"""The fitted meta-models of a stack as a plain object: what `kit stack` fitted, enough to
predict new images exactly as it predicted its own test split, and its export to plain data
(JSON-able structure, numpy arrays, LightGBM's own model text) and back. No file access: the
store (kit.store.meta_models) writes and reads the exported data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kit.errors import DataError
from kit.stack.features import Features, ImagePCA
from kit.stack.picking import BLEND, LIGHTGBM, RIDGE
from kit.stack.ridge import RidgeFit
from kit.store.meta_models import MetaModels

EXPORT_FORMAT = 1  # bump when the exported structure's meaning changes
AXES = "xy"


@dataclass
class FoldMeta:
    """One fold's meta-models of one coordinate (their test predictions are averaged)."""

    ridge: RidgeFit | None  # None: too few rows, so ridge and LightGBM are the blend
    boost_from_ridge: bool = False  # LightGBM's anchor: the ridge (else the blend)
    booster: Any = None  # lightgbm.Booster; None: 0 rounds, LightGBM is its anchor alone

    def predict(
        self, x: np.ndarray, blend: np.ndarray, design: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ridge, LightGBM) predictions of rows with base predictions `x`."""
        if self.ridge is None:
            return blend, blend
        ridge = self.ridge.predict(x, blend)
        start = ridge if self.boost_from_ridge else blend
        if self.booster is None:
            return ridge, start
        # One thread: a few rows, where thread start-up dominates (the result is the same).
        return ridge, start + self.booster.predict(design, num_threads=1)


@dataclass
class CoordinateMeta:
    """One coordinate's meta-models: one FoldMeta per fold, in fold order."""

    folds: list[FoldMeta]

    def predict(self, x: np.ndarray, design: np.ndarray) -> dict[str, np.ndarray]:
        """Blend, ridge and LightGBM predictions: the fold meta-models' mean, summed in fold
        order as `stack_coordinate` sums its test predictions."""
        blend = x.mean(axis=1)
        out = {RIDGE: np.zeros(len(x)), LIGHTGBM: np.zeros(len(x))}
        for fold in self.folds:
            ridge, boosted = fold.predict(x, blend, design)
            out[RIDGE] += ridge / len(self.folds)
            out[LIGHTGBM] += boosted / len(self.folds)
        out[BLEND] = blend
        return out


@dataclass
class FittedStack:
    """Every coordinate's meta-models, the base models they read (name, keypoints; in order),
    the feature settings, the image PCA, and the method picked per keypoint."""

    features: frozenset[str]
    bases: list[tuple[str, tuple[int, ...]]]
    num_keypoints: int
    pca: ImagePCA | None
    coordinates: dict[tuple[int, int], CoordinateMeta]  # (keypoint, axis) -> meta-models
    picks: dict[int, str]  # keypoint index -> method (a base model's name or a meta-model)

    @classmethod
    def of(cls, names: Sequence[str], bases: Sequence[Any], features, pca, coordinates, picks):
        """From `stack_predictions`' pieces: `names` the competition's keypoint names, `bases`
        its BaseModels, `picks` keypoint name -> method."""
        return cls(
            features=frozenset(features),
            bases=[(b.name, tuple(b.keypoints)) for b in bases],
            num_keypoints=len(names),
            pca=pca,
            coordinates=dict(coordinates),
            picks={list(names).index(name): method for name, method in picks.items()},
        )

    def predict(self, tests: Sequence[np.ndarray], images: np.ndarray) -> np.ndarray:
        """(M, K, 2) picked predictions (NaN: keypoints no base predicts) of `images`, given
        each base model's (M, K, 2) predictions of them (NaN where it predicts nothing)."""
        if len(tests) != len(self.bases):
            raise ValueError(f"{len(tests)} base predictions for {len(self.bases)} base models")
        feats = Features.build([np.asarray(t, np.float64) for t in tests], images, self.pca)
        out = np.full((len(images), self.num_keypoints, 2), np.nan)
        names = [name for name, _ in self.bases]
        for k, method in sorted(self.picks.items()):
            if method in names:  # a base model picked: its own columns
                out[:, k] = np.asarray(tests[names.index(method)], np.float64)[:, k]
                continue
            models = [i for i, (_, kps) in enumerate(self.bases) if k in kps]
            for axis in (0, 1):
                x, design = feats.coordinate(models, k, axis, self.features)
                out[:, k, axis] = self.coordinates[(k, axis)].predict(x, design)[method]
        return out

    def export(self) -> MetaModels:
        """Plain data: the structure (JSON), the ridge fits and PCA (arrays), the boosters
        (LightGBM's model text)."""
        ridge: dict[str, np.ndarray] = {}
        boosters: dict[str, str] = {}
        coordinates = []
        for (k, axis), meta in sorted(self.coordinates.items()):
            folds = []
            for f, fold in enumerate(meta.folds):
                key = f"k{k:03d}-{AXES[axis]}-f{f}"
                if fold.ridge is not None:
                    ridge |= _ridge_arrays(key, fold.ridge)
                if fold.booster is not None:
                    boosters[key] = fold.booster.model_to_string()
                folds.append(
                    {
                        "ridge": key if fold.ridge is not None else None,
                        "boost_from_ridge": fold.boost_from_ridge,
                        "booster": key if fold.booster is not None else None,
                    }
                )
            coordinates.append({"keypoint": k, "axis": axis, "folds": folds})
        structure = {
            "format": EXPORT_FORMAT,
            "features": sorted(self.features),
            "bases": [{"name": n, "keypoints": list(kps)} for n, kps in self.bases],
            "num_keypoints": self.num_keypoints,
            "picks": {str(k): m for k, m in sorted(self.picks.items())},
            "coordinates": coordinates,
        }
        arrays = {"ridge": ridge}
        if self.pca is not None:
            arrays["image-pca"] = {"mean": self.pca.mean, "components": self.pca.components}
        return MetaModels(structure, arrays, boosters)

    @classmethod
    def from_export(cls, saved: MetaModels) -> FittedStack:
        """The exported data back as a FittedStack (boosters parsed by LightGBM)."""
        s = saved.structure
        if int(s.get("format", 0)) != EXPORT_FORMAT:
            raise DataError(
                f"saved meta-models of format {s.get('format')}; this kit reads {EXPORT_FORMAT}"
            )
        boosters = _boosters(saved.texts)
        ridge = saved.arrays.get("ridge", {})
        coordinates = {
            (int(c["keypoint"]), int(c["axis"])): CoordinateMeta(
                [_fold_meta(f, ridge, boosters) for f in c["folds"]]
            )
            for c in s["coordinates"]
        }
        pca_arrays = saved.arrays.get("image-pca")
        pca = ImagePCA(pca_arrays["mean"], pca_arrays["components"]) if pca_arrays else None
        return cls(
            features=frozenset(s["features"]),
            bases=[(b["name"], tuple(int(k) for k in b["keypoints"])) for b in s["bases"]],
            num_keypoints=int(s["num_keypoints"]),
            pca=pca,
            coordinates=coordinates,
            picks={int(k): m for k, m in s["picks"].items()},
        )


def _ridge_arrays(key: str, fit: RidgeFit) -> dict[str, np.ndarray]:
    return {
        f"{key}/x_mean": np.asarray(fit.x_mean, np.float64),
        f"{key}/coef": np.asarray(fit.coef, np.float64),
        f"{key}/intercept": np.float64(fit.intercept),
        f"{key}/penalty": np.float64(fit.penalty),
    }


def _fold_meta(fold: dict, ridge: dict[str, np.ndarray], boosters: dict[str, Any]) -> FoldMeta:
    key = fold["ridge"]
    fit = None
    if key is not None:
        fit = RidgeFit(
            ridge[f"{key}/x_mean"],
            ridge[f"{key}/coef"],
            float(ridge[f"{key}/intercept"]),
            float(ridge[f"{key}/penalty"]),
        )
    booster = boosters[fold["booster"]] if fold["booster"] is not None else None
    return FoldMeta(fit, bool(fold["boost_from_ridge"]), booster)


def _boosters(texts: dict[str, str]) -> dict[str, Any]:
    if not texts:
        return {}
    import lightgbm  # only when there are trees to read

    return {key: lightgbm.Booster(model_str=text) for key, text in texts.items()}
