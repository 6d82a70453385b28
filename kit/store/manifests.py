"""The manifests that cross stages, as typed records: one writer (`write`), one reader (`load`).

On disk they stay JSON, as before, plus ``"format": {"kind": ..., "version": N}``. A manifest
written before the format existed (version 0) has the same fields and loads as it is; one from
a newer kit, of another kind, or missing a field is refused with the file named and what to do.
Nested parts (scores, settings, provenance) stay plain JSON objects: their keys are data
(keypoint names, fold numbers), not fields.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from kit.errors import DataError
from kit.store.fields import check_scores, check_types, fits
from kit.store.files import read_json
from kit.workspace import write_json

__all__ = [
    "Manifest",
    "PseudoManifest",
    "RunManifest",
    "StackManifest",
    "SubmissionManifest",
    "manifest_kind",
]

FORMAT_KEY = "format"
Json = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What every manifest records of the kit that wrote it (keyword-only, so that each kind's
    own required fields come first)."""

    KIND: ClassVar[str]
    VERSION: ClassVar[int] = 1
    REDO: ClassVar[str]  # what the user runs to write it again

    kit: str = ""
    git_commit: str | None = None
    created: str = ""

    def to_json(self) -> Json:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {FORMAT_KEY: {"kind": self.KIND, "version": self.VERSION}, **fields}

    def write(self, path: Path) -> None:
        write_json(path, self.to_json())

    @classmethod
    def from_json(cls, data: Json, path: Path) -> Self:
        kind, version = manifest_kind(data)
        if kind not in (None, cls.KIND):
            raise DataError(f"a {kind} manifest, not a {cls.KIND} one", path=path, hint=cls.REDO)
        if version > cls.VERSION:
            raise DataError(
                f"{cls.KIND} manifest format {version} is newer than this kit reads "
                f"({cls.VERSION})",
                path=path,
                hint="upgrade kit (pip install -U kit), or " + cls.REDO,
            )
        known = {f.name: f for f in dataclasses.fields(cls)}
        required = [n for n, f in known.items() if _required(f)]
        missing = [n for n in required if n not in data]
        if missing:
            raise DataError(
                f"{cls.KIND} manifest lacks {', '.join(missing)}", path=path, hint=cls.REDO
            )
        check_types(data, _field_types(cls), path, cls.REDO)
        cls.check_content(data, path)
        return cls(**{name: data[name] for name in known if name in data})

    @classmethod
    def check_content(cls, data: Json, path: Path) -> None:
        """What a kind's fields hold beyond their types (each kind adds its own)."""

    @classmethod
    def load(cls, path: Path) -> Self:
        try:
            data = read_json(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read the manifest: {exc}", path=path, hint=cls.REDO) from exc
        if not isinstance(data, dict):
            raise DataError("the manifest is not a JSON object", path=path, hint=cls.REDO)
        return cls.from_json(data, path)

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)


@functools.cache
def _field_types(cls: type[Manifest]) -> dict[str, Any]:
    """Each dataclass field's annotation, resolved (the ClassVars left out)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_columns(data: Json, path: Path, redo: str) -> None:
    """A run's or stack's keypoints: one name per competition index, as its arrays' columns."""
    names, indices = data["keypoints"], data["keypoint_indices"]
    if len(names) != len(indices) or any(k < 0 for k in indices):
        raise DataError(
            f"manifest has {len(names)} keypoint names for {len(indices)} indices",
            path=path,
            hint=redo,
        )


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def manifest_kind(data: Json) -> tuple[str | None, int]:
    """(kind, version) of a manifest's JSON; (None, 0) for one written before formats."""
    stamp = data.get(FORMAT_KEY)
    if not isinstance(stamp, dict):
        return None, 0
    return stamp.get("kind"), int(stamp.get("version", 0))


@dataclass(frozen=True)
class RunManifest(Manifest):
    """runs/<run-id>/manifest.json: what a K-fold training run was and scored."""

    KIND: ClassVar[str] = "run"
    REDO: ClassVar[str] = "rerun `kit train` with the same settings (finished folds are kept)"

    run_id: str
    competition: str
    family: str
    config: Json
    target_set: str
    plan: Json
    keypoints: list[str]
    keypoint_indices: list[int]
    metric: str
    seed: int
    folds: Json  # file, sha256, total, trained, complete, rows_predicted, rows_total
    data: Json  # row counts and the cache's checksums
    cv: Json  # overall, per_keypoint, per_group (, nme)
    fold_scores: Json
    fold_epochs: Json
    fold_seconds: Json
    train_seconds: float
    code_sha256: str
    seeds: Json = field(default_factory=dict)
    wall_seconds: float = 0.0
    device: str = ""
    fold_devices: Json = field(default_factory=dict)
    fold_speeds: Json = field(default_factory=dict)
    torch: str = ""
    pseudo: Json = field(default_factory=dict)  # the pseudo-label set trained on ({}: none)

    @classmethod
    def check_content(cls, data: Json, path: Path) -> None:
        check_scores(data["cv"], path, cls.REDO)
        _check_columns(data, path, cls.REDO)
        trained = data["folds"].get("trained")
        if not fits(trained, list[int]):
            raise DataError(
                "manifest field folds.trained is not a list of fold numbers",
                path=path,
                hint=cls.REDO,
            )


@dataclass(frozen=True)
class StackManifest(Manifest):
    """stacks/<stack-id>/manifest.json: the runs stacked, the methods' CV and the picks."""

    KIND: ClassVar[str] = "stack"
    REDO: ClassVar[str] = "delete the stack's folder and rerun `kit stack`"

    stack_id: str
    competition: str
    metric: str
    runs: list[Json]  # run_id, family, group, keypoints, cv
    features: list[str]
    keypoints: list[str]
    keypoint_indices: list[int]
    picks: dict[str, str]
    best_single: str
    cv: Json  # the picked stack's scores: overall, per_keypoint, ...
    methods: dict[str, Json]
    folds: Json
    data: Json
    code_sha256: str
    lightgbm: Json = field(default_factory=dict)
    picks_per_fold: Json = field(default_factory=dict)
    ridge_weights: Json = field(default_factory=dict)
    # keypoint -> how many meta-models fell back to the blend (older stacks: the keypoints)
    fallbacks_to_blend: dict[str, int] | list[str] = field(default_factory=dict)
    lightgbm_rounds: Json = field(default_factory=dict)
    min_meta_rows: int = 0
    seconds: float = 0.0
    lightgbm_version: str = ""
    meta_models: Json = field(default_factory=dict)  # format, files: {path: sha256} ({}: none)

    @classmethod
    def check_content(cls, data: Json, path: Path) -> None:
        check_scores(data["cv"], path, cls.REDO)
        _check_columns(data, path, cls.REDO)


@dataclass(frozen=True)
class PseudoManifest(Manifest):
    """pseudo/<pseudo-id>/manifest.json: whose predictions fill the missing labels, how, and
    how many (kit.pseudo)."""

    KIND: ClassVar[str] = "pseudo"
    REDO: ClassVar[str] = "delete the pseudo-label set's folder and rerun `kit pseudo`"

    pseudo_id: str
    competition: str
    teacher: Json  # kind, id, path, cv_score, keypoints, family (kit.submit.Source.describe)
    teacher_cv: float
    strict: bool
    method: str  # in words: where the pseudo labels come from
    metric: str
    keypoints: list[str]  # the label columns: every keypoint of the competition
    counts: Json  # train_true, train_pseudo, train_none, test_pseudo, test_none, rows
    folds: Json  # file, sha256, total
    data: Json  # the cache's checksums (train, test) and row counts
    code_sha256: str
    seconds: float = 0.0


@dataclass(frozen=True)
class SubmissionManifest(Manifest):
    """submissions/COMP/<stem>.json beside its CSV: where it came from and its upload."""

    KIND: ClassVar[str] = "submission"
    REDO: ClassVar[str] = "rerun `kit submit` for that source"

    competition: str
    file: str
    csv_sha256: str
    cv_score: float
    metric: str
    source: Json  # kind, id, path, cv_score, keypoints, family
    kaggle_slug: str = ""
    csv: str = ""
    cv: Json = field(default_factory=dict)
    subset_source: Json | None = None  # the second source of a [submit_split] (kit.submit)
    subset: str | None = None  # the competition's split subset: cv[subset] is that CV
    runs: list[str] = field(default_factory=list)
    stack: str | None = None
    stacks: list[str] = field(default_factory=list)
    settings: Json = field(default_factory=dict)
    message: str = ""
    dry_run: bool = True
    uploaded: bool = False
    kaggle_ref: int | None = None
    upload_error: str | None = None
    uploaded_at: str | None = None
    upload_skipped: str | None = None  # why it can never be uploaded (no Kaggle page)

    @classmethod
    def from_json(cls, data: Json, path: Path) -> Self:
        return super().from_json(_named_subset_source(data, cls), path)


def _named_subset_source(data: Json, cls: type[SubmissionManifest]) -> Json:
    """A manifest written before the split subset was the competition's (kit.submit) named its
    second source after the subset, ``<subset>_source``: read as subset_source, with subset
    the name. Any other manifest comes back as it is."""
    if "subset_source" in data:
        return data
    known = {f.name for f in dataclasses.fields(cls)}
    named = [key for key in data if key.endswith("_source") and key not in known]
    if len(named) != 1:
        return data
    (key,) = named
    migrated = {k: v for k, v in data.items() if k != key}
    migrated["subset_source"] = data[key]
    migrated.setdefault("subset", key.removesuffix("_source"))
    return migrated
