"""Stack folders read back: ``comp.workspace.stacks/<stack-id>/`` (written by kit.stack.store)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.errors import DataError, KitError
from kit.store.files import check_shape, read_npz
from kit.store.manifests import StackManifest
from kit.store.predictions import SavedPredictions


@dataclass
class StackResult(SavedPredictions):
    """A stack folder; its `oof` holds the per-keypoint picked method's nested OOF."""

    stack_id: str
    path: Path
    manifest: StackManifest
    table: pd.DataFrame
    reused: bool = False

    @property
    def run_ids(self) -> list[str]:
        return [r["run_id"] for r in self.manifest.runs]

    def candidate_tests(self, methods: list[str], rows: int) -> dict[str, np.ndarray]:
        """The test predictions of `methods` from candidates.npz, each checked to be
        (rows, the stack's keypoints, 2) where it is read."""
        path = self.path / "candidates.npz"
        arrays = read_npz(path, [f"test/{m}" for m in methods], StackManifest.REDO)
        shape = (rows, len(self.manifest.keypoint_indices), 2)
        for name, array in arrays.items():
            check_shape(path, name, array, shape, StackManifest.REDO)
        return {name.removeprefix("test/"): array for name, array in arrays.items()}


def load_stack(comp: Competition, stack_id: str, reused: bool = True) -> StackResult:
    """A finished stack by id."""
    path = comp.workspace.stacks / stack_id
    if not (path / "manifest.json").is_file():
        known = ", ".join(s.stack_id for s in list_stacks(comp)) or "none"
        raise KitError(f"no finished stack {stack_id!r} for {comp.name}", hint=f"stacks: {known}")
    manifest = StackManifest.load(path / "manifest.json")
    return StackResult(stack_id, path, manifest, read_table(path), reused=reused)


def read_table(path: Path) -> pd.DataFrame:
    """A stack folder's table.csv (its methods' scores), a DataError when it does not read."""
    table = path / "table.csv"
    try:
        return pd.read_csv(table)
    except (OSError, ValueError) as exc:  # pandas' parser and empty-data errors are ValueErrors
        raise DataError(
            f"cannot read the table: {exc}", path=table, hint=StackManifest.REDO
        ) from exc


def list_stacks(comp: Competition) -> list[StackResult]:
    """Every finished stack of `comp`, best CV first."""
    stacks = [
        load_stack(comp, p.parent.name)
        for p in sorted(comp.workspace.stacks.glob("*/manifest.json"))
    ]
    return sorted(stacks, key=lambda s: s.cv_score)
