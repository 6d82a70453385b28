"""THE folds file: one fold per train row, shared by every model and the meta-learner.

Rows that must not be split (exact/near-duplicate images, and rows of one source group such as
several faces of one photo) are merged into groups by union-find, and whole groups are dealt to
folds greedily so that every fold gets a similar number of rows and a similar share of complete
rows (all keypoints present). Written as ``folds.csv`` (id,fold,group in the cache's row order)
plus ``folds.json`` (k, seed, data checksum), so re-running with the same inputs is a no-op.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.data import duplicates
from kit.data.arrays import KeypointData
from kit.errors import DataError
from kit.workspace import read_json, sha256_file, write_json, write_text

# Bump when the assignment or the grouping changes, so old folds files are rebuilt.
FOLDS_VERSION = 1
COLUMNS = ("id", "fold", "group")


@dataclass(frozen=True)
class FoldsResult:
    path: Path
    folds: pd.DataFrame  # id, fold, group: one row per train row
    table: pd.DataFrame  # per fold: rows, complete rows, complete share, groups
    written: bool  # False when the existing file was already up to date
    k: int
    seed: int


def fold_groups(data: KeypointData) -> np.ndarray:
    """(N,) labels 0..G-1 joining duplicate images and rows of one source group."""
    dup = duplicates.find_duplicates(data.images).labels
    a1, b1 = duplicates.labels_to_edges(dup)
    a2, b2 = duplicates.labels_to_edges(data.groups)
    return duplicates.connected_labels(
        len(data), np.concatenate([a1, a2]), np.concatenate([b1, b2])
    )


def assign_folds(groups: np.ndarray, complete: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N,) fold per row: whole groups, balanced in rows and in complete/incomplete rows.

    Groups go largest first (ties in a seeded random order) to the fold whose fill grows least:
    the cost of fold f is sum over classes (complete, incomplete, all rows) of
    count[f, class] * group[class] / total[class]**2, i.e. the fold that is emptiest in the
    classes this group brings.
    """
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if k < 2:
        raise DataError(f"k={k}: need at least 2 folds", hint="use --k 2 or more")
    if k > n_groups:
        raise DataError(
            f"k={k} is more than the {n_groups} groups of train rows that must stay together",
            hint=f"use --k {n_groups} or fewer",
        )
    size = np.bincount(groups, minlength=n_groups)
    full = np.bincount(groups, weights=complete, minlength=n_groups)
    per_group = np.stack([full, size - full, size], axis=1)  # (G, 3) classes
    totals = per_group.sum(axis=0)
    weights = np.divide(1.0, totals**2, out=np.zeros(3), where=totals > 0)

    shuffled = np.random.default_rng(seed).permutation(n_groups)
    order = shuffled[np.argsort(-size[shuffled], kind="stable")]
    counts = np.zeros((k, 3))
    fold_of_group = np.empty(n_groups, np.int64)
    for g in order:
        f = int(np.argmin(counts @ (per_group[g] * weights)))
        fold_of_group[g] = f
        counts[f] += per_group[g]
    return fold_of_group[groups]


def fold_table(folds: np.ndarray, groups: np.ndarray, complete: np.ndarray) -> pd.DataFrame:
    """Per fold: rows, complete rows, their share, and the number of groups."""
    frame = pd.DataFrame({"fold": folds, "group": groups, "complete": complete.astype(int)})
    table = frame.groupby("fold").agg(
        rows=("group", "size"), complete=("complete", "sum"), groups=("group", "nunique")
    )
    table.insert(2, "complete_share", table["complete"] / table["rows"])
    return table.reset_index()


def data_checksum(data: KeypointData) -> str:
    """sha256 of everything folds depend on: ids, source groups, images, missing pattern."""
    h = hashlib.sha256()
    for part in (data.ids.astype(str), data.groups.astype(str)):
        h.update("\n".join(part.tolist()).encode())
    h.update(np.ascontiguousarray(data.images).tobytes())
    h.update(np.packbits(np.isnan(data.keypoints)).tobytes())
    return h.hexdigest()


def make_folds(data: KeypointData, k: int, seed: int) -> pd.DataFrame:
    """The folds frame (id, fold, group) for these train rows."""
    groups = fold_groups(data)
    folds = assign_folds(groups, data.complete, k, seed)
    return pd.DataFrame({"id": data.ids, "fold": folds, "group": groups})


def _meta_path(comp: Competition) -> Path:
    return comp.workspace.folds_csv.with_suffix(".json")


def _settings(k: int, seed: int, checksum: str) -> dict[str, object]:
    return {
        "k": k,
        "seed": seed,
        "data_checksum": checksum,
        "version": FOLDS_VERSION,
        "candidate_bits": duplicates.CANDIDATE_BITS,
        "min_correlation": duplicates.MIN_CORRELATION,
    }


def _up_to_date(comp: Competition, settings: dict[str, object]) -> bool:
    csv, meta = comp.workspace.folds_csv, _meta_path(comp)
    if not (csv.is_file() and meta.is_file()):
        return False
    try:
        stored = read_json(meta)
    except ValueError:
        return False
    same = all(stored.get(key) == value for key, value in settings.items())
    return same and stored.get("folds_sha256") == sha256_file(csv)


def write_folds(comp: Competition, k: int = 5, seed: int = 0) -> FoldsResult:
    """Build and write folds.csv (+ folds.json); a no-op when inputs and settings are unchanged."""
    data = KeypointData.load(comp.workspace.train_npz)
    settings = _settings(k, seed, data_checksum(data))
    path = comp.workspace.folds_csv
    written = not _up_to_date(comp, settings)
    if written:
        frame = make_folds(data, k, seed)
        write_text(path, frame.to_csv(index=False))
        write_json(_meta_path(comp), {**settings, "folds_sha256": sha256_file(path)})
    else:
        frame = pd.read_csv(path, dtype={"id": str})
        frame["id"] = data.ids
    table = fold_table(frame["fold"].to_numpy(), frame["group"].to_numpy(), data.complete)
    return FoldsResult(path=path, folds=frame, table=table, written=written, k=k, seed=seed)


def load_folds(comp: Competition, data: KeypointData) -> np.ndarray:
    """(N,) fold per row of `data`, after checking the file belongs to exactly these rows."""
    path = comp.workspace.folds_csv
    rerun = f"re-run `kit folds {comp.name}`"
    if not path.is_file():
        raise DataError("no folds file", path=path, hint=f"run `kit folds {comp.name}` first")
    try:
        frame = pd.read_csv(path, dtype={"id": str})
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot read the folds file: {exc}", path=path, hint=rerun) from exc
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"folds file lacks column(s) {', '.join(missing)}", path=path, hint=rerun)
    if len(frame) != len(data):
        raise DataError(
            f"folds file has {len(frame)} rows but the cached train data has {len(data)}",
            path=path,
            hint=rerun,
        )
    differs = np.flatnonzero(frame["id"].to_numpy(str) != data.ids.astype(str))
    if len(differs):
        row = int(differs[0])
        raise DataError(
            f"folds file is stale: row {row} has id {frame['id'][row]!r}, "
            f"the cached train data has {data.ids[row]!r} ({len(differs)} rows differ)",
            path=path,
            hint=rerun,
        )
    folds = pd.to_numeric(frame["fold"], errors="coerce").to_numpy()
    if np.isnan(folds).any() or (folds < 0).any() or (folds != np.round(folds)).any():
        raise DataError(
            "folds file has a fold that is not a whole number >= 0", path=path, hint=rerun
        )
    return folds.astype(np.int64)
