"""Meta-features beside the base predictions: coordinates, their differences, image
statistics."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

FEATURE_SETS = ("coords", "diffs", "image")


# "image" features: 6 statistics plus this many principal components of the training images
# (PCA fitted on at most PCA_ROWS of them).
IMAGE_COMPONENTS = 12


PCA_ROWS = 1000


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
