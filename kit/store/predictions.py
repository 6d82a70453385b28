"""What runs and stacks both leave: oof.npy, test.npy and a manifest with their scores.

The arrays are checked where they are read: a file that is missing, unreadable or of another
shape than its manifest says is a DataError naming it (the manifest's REDO rebuilds it).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kit.store.files import read_npy

if TYPE_CHECKING:
    from kit.store.manifests import RunManifest, StackManifest


class SavedPredictions:
    """A stage folder holding oof.npy, test.npy and manifest.json (runs and stacks alike)."""

    path: Path
    manifest: RunManifest | StackManifest

    @cached_property
    def oof(self) -> np.ndarray:
        """(N, K', 2) out-of-fold predictions in input pixels; columns = `keypoints`."""
        return self._read("oof.npy", "train_rows")

    @cached_property
    def test(self) -> np.ndarray:
        """(M, K', 2) test predictions in input pixels; columns = `keypoints`."""
        return self._read("test.npy", "test_rows")

    @property
    def cv_score(self) -> float:
        return float(self.manifest.cv["overall"])

    @property
    def keypoints(self) -> list[int]:
        return list(self.manifest.keypoint_indices)

    def rows(self, split: str) -> int | None:
        """The rows of `split` ("train_rows", "test_rows") the manifest records (a stack's
        records none: None, any)."""
        rows = self.manifest.data.get(split)
        return rows if isinstance(rows, int) and not isinstance(rows, bool) else None

    def _read(self, name: str, split: str) -> np.ndarray:
        shape = (self.rows(split), len(self.manifest.keypoint_indices), 2)
        return read_npy(self.path / name, shape, self.manifest.REDO)
