"""Pseudo-label sets on disk: content-addressed folders, their arrays and their one reader.

``comp.workspace.pseudo/<pseudo-id>/`` holds::

    labels.npz      train   float32 (N, K, 2), strict: (F, N, K, 2) one block per fold: the
                            true keypoints where present, the teacher's prediction where the
                            truth is missing, NaN where neither exists
                    source  int8 (N, K): 1 = true label, 0 = pseudo label, -1 = neither
                    test    float32 (M, K, 2), strict: (F, M, K, 2): the teacher's test
                            predictions (NaN for keypoints it does not predict)
    manifest.json   `PseudoManifest` (written last: the set then counts as finished)

K is every keypoint of the competition; F the folds of the folds file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from kit.competition import Competition
from kit.errors import DataError, KitError
from kit.store.files import read_npz, sha256_json
from kit.store.manifests import PseudoManifest
from kit.workspace import save_npz

PSEUDO_FORMAT = 1  # bump when the artifacts' meaning changes: old sets then get new ids
LABELS = "labels.npz"
MANIFEST = "manifest.json"
TRUE, PSEUDO, NONE = 1, 0, -1  # the values of `source`


def make_pseudo_id(teacher_id: str, strict: bool, inputs: dict[str, Any]) -> str:
    """The set's content address: its teacher, strictness, data, folds and code."""
    identity = {"format": PSEUDO_FORMAT, "teacher": teacher_id, "strict": strict, **inputs}
    return f"pseudo-{sha256_json(identity)[:12]}"


@dataclass
class PseudoResult:
    """A finished pseudo-label set (its manifest exists)."""

    pseudo_id: str
    path: Path
    manifest: PseudoManifest
    reused: bool = True

    @cached_property
    def arrays(self) -> dict[str, np.ndarray]:
        fields = ("train", "source", "test")
        return read_npz(self.path / LABELS, fields, self.manifest.REDO)  # checked as read

    @property
    def strict(self) -> bool:
        return bool(self.manifest.strict)

    @property
    def train(self) -> np.ndarray:
        """(N, K, 2), or (F, N, K, 2) for a strict set."""
        return self.arrays["train"]

    @property
    def source(self) -> np.ndarray:
        """(N, K) int8: 1 = true label, 0 = pseudo label, -1 = neither."""
        return self.arrays["source"]

    @property
    def test(self) -> np.ndarray:
        """(M, K, 2), or (F, M, K, 2) for a strict set."""
        return self.arrays["test"]

    @property
    def teacher_id(self) -> str:
        return str(self.manifest.teacher["id"])

    def fold_labels(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """The labels that student fold `fold` trains on: (train (N, K, 2), test (M, K, 2)).
        A strict set gives its fold-`fold` block, made by teacher models that never saw the
        fold's rows; any other set gives the same labels to every fold."""
        if not self.strict:
            return self.train, self.test
        if not 0 <= fold < len(self.train):
            raise DataError(
                f"the strict set has labels for {len(self.train)} folds, not fold {fold}",
                path=self.path / LABELS,
                hint="rebuild it with `kit pseudo ... --strict`",
            )
        return self.train[fold], self.test[fold]

    def check_inputs(self, comp: Competition, inputs: dict[str, Any]) -> None:
        """Refuse a set built from other cached data or another folds file than `inputs`
        (`kit.provenance.run_inputs` now)."""
        data, folds = self.manifest.data, self.manifest.folds
        same_data = all(data.get(split) == inputs["data"][split] for split in ("train", "test"))
        what = None if same_data else "other cached data"
        if what is None and folds.get("sha256") != inputs["folds"]:
            what = "another folds file"
        if what is not None:
            raise DataError(
                f"pseudo-label set {self.pseudo_id} was built from {what} than {comp.name} has now",
                path=self.path / MANIFEST,
                hint=f"build a new one: `kit pseudo {comp.name}`",
            )

    def describe(self) -> dict[str, Any]:
        """What a run's manifest records of the set it trained on."""
        manifest = self.manifest
        return {
            "id": self.pseudo_id,
            "teacher": self.teacher_id,
            "teacher_kind": manifest.teacher.get("kind"),
            "teacher_cv": manifest.teacher_cv,
            "strict": self.strict,
            "counts": manifest.counts,
        }


def write_pseudo(
    path: Path, train: np.ndarray, source: np.ndarray, test: np.ndarray, manifest: PseudoManifest
) -> None:
    """The one writer: the arrays, then the manifest (last: the set now counts as finished)."""
    (path / MANIFEST).unlink(missing_ok=True)
    save_npz(
        path / LABELS,
        train=train.astype(np.float32),
        source=source.astype(np.int8),
        test=test.astype(np.float32),
    )
    manifest.write(path / MANIFEST)


def load_pseudo(comp: Competition, pseudo_id: str, reused: bool = True) -> PseudoResult:
    """A finished pseudo-label set by id."""
    path = comp.workspace.pseudo / pseudo_id
    if not pseudo_id or not (path / MANIFEST).is_file():
        known = ", ".join(p.pseudo_id for p in list_pseudo(comp)) or "none"
        raise KitError(
            f"no pseudo-label set {pseudo_id!r} for {comp.name}",
            hint=f"build one with `kit pseudo {comp.name}`; sets: {known}",
        )
    return PseudoResult(pseudo_id, path, PseudoManifest.load(path / MANIFEST), reused=reused)


def list_pseudo(comp: Competition) -> list[PseudoResult]:
    """Every finished pseudo-label set of `comp`, newest first."""
    found = [
        PseudoResult(p.parent.name, p.parent, PseudoManifest.load(p))
        for p in comp.workspace.pseudo.glob(f"*/{MANIFEST}")
    ]
    return sorted(found, key=lambda s: s.manifest.created, reverse=True)
