"""The one in-memory form of a split, shared by every competition and every later stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.errors import DataError
from kit.store.files import check_shape, read_npz
from kit.workspace import save_npz

FIELDS = ("images", "keypoints", "ids", "groups", "to_original")


@dataclass
class KeypointData:
    """One split (train or test) at the competition's input size.

    images:      uint8 (N, S, S), grayscale model input
    keypoints:   float32 (N, K, 2) in input pixels (0-based pixel centres); NaN = missing.
                 A test split has all-NaN keypoints.
    ids:         (N,) row ids as the competition names them (FKD ImageId, ibug file name)
    groups:      (N,) str; rows of one group (same source photo) must share a fold
    to_original: float32 (N, 2, 3) affine map from input pixels to original image pixels
                 (identity for FKD; the face-box crop for ibug-68)
    """

    images: np.ndarray
    keypoints: np.ndarray
    ids: np.ndarray
    groups: np.ndarray
    to_original: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.images)
        for name in FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows, images has {n}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def complete(self) -> np.ndarray:
        """(N,) bool: every keypoint present."""
        return ~np.isnan(self.keypoints).any(axis=(1, 2))

    def subset(self, rows: np.ndarray) -> KeypointData:
        return KeypointData(**{name: getattr(self, name)[rows] for name in FIELDS})

    def to_original_coords(self, points: np.ndarray) -> np.ndarray:
        """Map (N, K, 2) input-pixel points to original image pixels."""
        a = self.to_original
        return np.einsum("nij,nkj->nki", a[:, :, :2], points) + a[:, None, :, 2]

    def save(self, path: Path) -> None:
        save_npz(path, **{name: getattr(self, name) for name in FIELDS})

    @classmethod
    def whole_images(
        cls, images: np.ndarray, keypoints: np.ndarray, ids: np.ndarray
    ) -> KeypointData:
        """Rows whose images are used whole, as FKD's: no crop (the identity map to original
        pixels) and each row a group of its own (named by its id)."""
        return cls(images, keypoints, ids, ids.astype(str), identity_transforms(len(ids)))

    @classmethod
    def load(cls, path: Path) -> KeypointData:
        """A split cached by `kit fetch`, refused (one line naming it) when it is damaged."""
        if not path.is_file():
            raise DataError("no cached arrays", path=path, hint="run `kit fetch` first")
        redo = _refetch(path)
        arrays = read_npz(path, FIELDS, redo)
        n = len(arrays["images"]) if arrays["images"].ndim else 0
        for name, shape in _SHAPES.items():
            check_shape(path, name, arrays[name], [n if s == "N" else s for s in shape], redo)
        if arrays["images"].dtype != np.uint8:
            raise DataError(f"images are {arrays['images'].dtype}, not uint8", path=path, hint=redo)
        return cls(**arrays)


# Each field's shape in a cached split ("N": the rows, None: any length).
_SHAPES: dict[str, tuple[int | str | None, ...]] = {
    "images": ("N", None, None),
    "keypoints": ("N", None, 2),
    "ids": ("N",),
    "groups": ("N",),
    "to_original": ("N", 2, 3),
}


def _refetch(path: Path) -> str:
    """What rebuilds a cached split: `kit fetch` of its competition (work/<comp>/cache/...),
    which rebuilds a cache whose checksum no longer matches."""
    name = path.parent.parent.name if path.parent.name == "cache" else "COMPETITION"
    return f"rebuild it with `kit fetch {name}`"


def identity_transforms(n: int) -> np.ndarray:
    eye = np.zeros((n, 2, 3), np.float32)
    eye[:, 0, 0] = eye[:, 1, 1] = 1.0
    return eye
