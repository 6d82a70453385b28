"""What runs and stacks both leave: oof.npy, test.npy and a manifest with their scores."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from kit.store.manifests import RunManifest, StackManifest


class SavedPredictions:
    """A stage folder holding oof.npy, test.npy and manifest.json (runs and stacks alike)."""

    path: Path
    manifest: RunManifest | StackManifest

    @cached_property
    def oof(self) -> np.ndarray:
        """(N, K', 2) out-of-fold predictions in input pixels; columns = `keypoints`."""
        return np.load(self.path / "oof.npy")

    @cached_property
    def test(self) -> np.ndarray:
        return np.load(self.path / "test.npy")

    @property
    def cv_score(self) -> float:
        return float(self.manifest.cv["overall"])

    @property
    def keypoints(self) -> list[int]:
        return list(self.manifest.keypoint_indices)
