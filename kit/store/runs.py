"""Run folders read back: their layout, ids, done markers and manifests (no torch here).

``comp.workspace.runs/<run-id>/`` holds (written by kit.training)::

    config.json                 the resolved config (written first)
    fold-<k>.pt                 the fold's weights (kit.training.checkpoint)
    fold-<k>.npz                the fold's OOF rows + predictions and its test predictions
    fold-<k>.done.json          the fold's `FoldRecord`, written last: a fold counts only with it
    oof.npy  oof_folds.npy      (N, K, 2) OOF predictions (NaN = not predicted) and the fold
                                whose model predicted each row (-1 = none)
    test.npy                    (M, K, 2) test predictions averaged over the fold models
    manifest.json               `RunManifest`: scores, seeds, folds, timing, device, versions
    curves.png  worst.png

A run id hashes (format, resolved config, target plan, data checksums, folds file checksum,
training code checksum), so the same work is never done twice, and an edit that can change
what a run learns gets new runs instead of reusing stale ones.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Self

import numpy as np

from kit.competition import Competition
from kit.errors import DataError, KitError
from kit.store.files import read_json, read_npy, sha256_json
from kit.store.manifests import RunManifest
from kit.store.predictions import SavedPredictions
from kit.workspace import write_json

RUN_FORMAT = 1  # bump when the artifacts' meaning changes: old runs then get new ids
Json = dict[str, Any]


def make_run_id(config: Json, plan: Json, inputs: Json) -> str:
    """The run's content address: family + hash of (format, config, plan, inputs), where
    `config` is `RunConfig.to_dict()`, `plan` `TargetPlan.describe()` and `inputs` the
    checksums of kit.provenance.run_inputs (plus what the run adds: its routing)."""
    identity = {"format": RUN_FORMAT, "config": config, "plan": plan, **inputs}
    return f"{config['family']}-{sha256_json(identity)[:12]}"


@dataclass(frozen=True)
class FoldRecord:
    """One fold's done marker (fold-<k>.done.json): its score and how each sub-model trained
    (`submodels`: name -> seed, train_rows, best/kept epochs, seconds, history, ...)."""

    fold: int
    val_rows: int = 0
    score: float = float("nan")
    scores: Json = field(default_factory=dict)
    submodels: dict[str, Json] = field(default_factory=dict)
    imputation: Json | None = None
    pseudo: Json | None = None
    device: str = ""
    speed: Json = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> Json:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_json(cls, data: Json) -> Self:
        """A marker as written; fields a marker from an older kit lacks keep their defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class RunFolder:
    """Every file of one run folder, by name."""

    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / "config.json"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def oof(self) -> Path:
        return self.path / "oof.npy"

    @property
    def oof_folds(self) -> Path:
        return self.path / "oof_folds.npy"

    @property
    def test(self) -> Path:
        return self.path / "test.npy"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def worst(self) -> Path:
        return self.path / "worst.png"

    def checkpoint(self, fold: int) -> Path:
        return self.path / f"fold-{fold}.pt"

    def arrays(self, fold: int) -> Path:
        return self.path / f"fold-{fold}.npz"

    def marker(self, fold: int) -> Path:
        return self.path / f"fold-{fold}.done.json"

    def done_folds(self) -> list[int]:
        """Folds whose done marker exists (their .pt and .npz were written before it)."""
        names = (p.name for p in self.path.glob("fold-*.done.json"))
        return sorted(int(name.split("-")[1].split(".")[0]) for name in names)

    def fold_record(self, fold: int) -> FoldRecord:
        path = self.marker(fold)
        try:
            data = read_json(path)
            return FoldRecord.from_json(data)
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # not a marker's JSON
            raise DataError(
                f"cannot read the fold's done marker: {exc}",
                path=path,
                hint="delete it and rerun `kit train` with the run's settings",
            ) from exc

    def write_fold_record(self, record: FoldRecord) -> None:
        """The done marker: written last, after the fold's .pt and .npz."""
        write_json(self.marker(record.fold), record.to_json())

    def finished(self, folds: list[int]) -> bool:
        """Whether the manifest exists and was assembled from exactly `folds`, and it and the
        run's arrays read back. A damaged one is not finished: `kit train` assembles the run
        again from its folds' files (what RunManifest.REDO tells the user)."""
        if not self.manifest.is_file():
            return False
        try:
            run = RunResult(self.run_id, self.path, RunManifest.load(self.manifest))
            return run.manifest.folds.get("trained") == folds and run.arrays_read()
        except DataError:
            return False


def done_folds(path: Path) -> list[int]:
    """Folds of the run folder `path` whose done marker exists."""
    return RunFolder(path).done_folds()


@dataclass
class RunResult(SavedPredictions):
    """A finished run (its manifest exists)."""

    run_id: str
    path: Path
    manifest: RunManifest
    reused: bool = False
    trained_folds: list[int] = field(default_factory=list)  # trained by this call
    resumed_folds: list[int] = field(default_factory=list)  # found finished on disk

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path)

    @cached_property
    def oof_folds(self) -> np.ndarray:
        """(N,) the fold whose model predicted each OOF row (-1: none)."""
        return read_npy(self.folder.oof_folds, (self.rows("train_rows"),), self.manifest.REDO)

    def arrays_read(self) -> bool:
        """True once oof.npy, test.npy and oof_folds.npy read back as the manifest says (a
        DataError naming the first that does not)."""
        return all(a is not None for a in (self.oof, self.test, self.oof_folds))


def load_run(comp: Competition, run_id: str) -> RunResult:
    """A finished run by id (its manifest exists)."""
    folder = RunFolder(comp.workspace.runs / run_id)
    if not folder.manifest.is_file():
        known = ", ".join(r.run_id for r in list_runs(comp)) or "none"
        raise KitError(
            f"no finished run {run_id!r} for {comp.name}", hint=f"finished runs: {known}"
        )
    return RunResult(run_id, folder.path, RunManifest.load(folder.manifest), reused=True)


def list_runs(comp: Competition) -> list[RunResult]:
    """Every finished run of `comp`, best CV score first.

    A manifest that does not read back (unreadable, a field missing or of the wrong kind) is
    refused, not skipped: one DataError naming it and RunManifest.REDO, so that every command
    listing runs (report, stack, submit, predict, pseudo) says so alike, and none silently
    picks from fewer runs than the folder holds."""
    root = comp.workspace.runs
    runs = [
        RunResult(p.parent.name, p.parent, RunManifest.load(p), reused=True)
        for p in sorted(root.glob("*/manifest.json"))
    ]
    return sorted(runs, key=lambda r: r.cv_score)
