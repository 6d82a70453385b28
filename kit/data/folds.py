"""THE folds file: one fold per train row, shared by every model and the meta-learner.

Rows that must not be split are merged into groups by union-find: exact and near-duplicate
images, rows of one source group (several faces of one photo), and with ``group_by="identity"``
(the default) the faces of one person across pose, expression and lighting (kit.data.identity),
because the test set holds new people. Whole groups are dealt to folds greedily so that every
fold gets a similar number of rows and a similar share of complete rows (all keypoints present).
Written as ``folds.csv`` (id,fold,group in the cache's row order) plus ``folds.json`` (how it
was made: k, seed, grouping and its settings, data checksum).

An existing folds file is kept unless the data changed or the caller asks for other settings or
``force``: runs made on it stay comparable. A file made by an older grouping says so
(`FoldsResult.outdated`), and ``force`` rebuilds it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.data import duplicates, identity
from kit.data.arrays import KeypointData
from kit.data.identity import Anchors
from kit.errors import DataError, KitError
from kit.store.files import read_json, sha256_file
from kit.store.manifests import RunManifest
from kit.workspace import write_json, write_text

# Bump when the assignment or the grouping changes; older files are kept until --force.
FOLDS_VERSION = 2
COLUMNS = ("id", "fold", "group")
GROUP_BY = ("identity", "duplicates")
DEFAULT_GROUP_BY = "identity"
DEFAULT_K, DEFAULT_SEED = 5, 0


@dataclass(frozen=True)
class FoldsResult:
    path: Path
    folds: pd.DataFrame  # id, fold, group: one row per train row
    table: pd.DataFrame  # per fold: rows, complete rows, complete share, groups
    written: bool  # False when the existing file was kept
    k: int
    seed: int
    group_by: str
    outdated: str | None = None  # why a kept file is older than what kit makes now
    embedder: str | None = None  # what told identities apart: face-net or hand-made


def comp_anchors(comp: Competition) -> Anchors | None:
    """The competition's identity anchors (``identity_anchors`` in competition.toml's
    [options]: keypoint names per part), or None: align by all present keypoints."""
    table = comp.options.get("identity_anchors")
    if not table:
        return None
    try:
        parts = {part: tuple(comp.subset_indices(",".join(names))) for part, names in table.items()}
        return Anchors(**parts)
    except (TypeError, KitError) as exc:
        raise DataError(
            f"identity_anchors: {exc}",
            path=comp.root / "competition.toml",
            hint="name left_eye, right_eye and optionally nose and mouth, as lists of keypoints",
        ) from exc


def fold_groups(
    data: KeypointData, group_by: str = DEFAULT_GROUP_BY, anchors: Anchors | None = None
) -> np.ndarray:
    """(N,) labels 0..G-1 joining duplicate images, rows of one source group and, with
    ``group_by="identity"``, faces of one person."""
    return _fold_grouping(data, group_by, anchors)[0]


def _fold_grouping(
    data: KeypointData, group_by: str, anchors: Anchors | None
) -> tuple[np.ndarray, identity.IdentityGrouping | None]:
    labels = [duplicates.find_duplicates(data.images).labels, data.groups]
    people = None
    if group_by == "identity":
        people = identity.group_identities(data.images, data.keypoints, anchors)
        labels.append(people.labels)
    edges = [duplicates.labels_to_edges(lab) for lab in labels]
    a = np.concatenate([e[0] for e in edges])
    b = np.concatenate([e[1] for e in edges])
    return duplicates.connected_labels(len(data), a, b), people


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


def make_folds(
    data: KeypointData,
    k: int,
    seed: int,
    group_by: str = DEFAULT_GROUP_BY,
    anchors: Anchors | None = None,
) -> pd.DataFrame:
    """The folds frame (id, fold, group) for these train rows."""
    return _make_folds(data, k, seed, group_by, anchors)[0]


def _make_folds(
    data: KeypointData, k: int, seed: int, group_by: str, anchors: Anchors | None
) -> tuple[pd.DataFrame, identity.IdentityGrouping | None]:
    groups, people = _fold_grouping(data, group_by, anchors)
    folds = assign_folds(groups, data.complete, k, seed)
    return pd.DataFrame({"id": data.ids, "fold": folds, "group": groups}), people


def _meta_path(comp: Competition) -> Path:
    return comp.workspace.folds_csv.with_suffix(".json")


def _settings(
    k: int, seed: int, group_by: str, checksum: str, people: identity.IdentityGrouping | None
) -> dict[str, object]:
    grouping: dict[str, object] = {
        "candidate_bits": duplicates.CANDIDATE_BITS,
        "min_correlation": duplicates.MIN_CORRELATION,
    }
    if people is not None:
        grouping["identity"] = {
            **dataclasses.asdict(identity.IdentitySettings()),
            "embedder_used": people.embedder,
            "face_net_declined": people.declined,
        }
    return {
        "k": k,
        "seed": seed,
        "group_by": group_by,
        "data_checksum": checksum,
        "version": FOLDS_VERSION,
        **grouping,
    }


def read_folds_meta(comp: Competition) -> dict[str, Any] | None:
    """folds.json of an intact folds file (its recorded checksum matches), else None."""
    csv, meta = comp.workspace.folds_csv, _meta_path(comp)
    if not (csv.is_file() and meta.is_file()):
        return None
    try:
        stored = read_json(meta)
    except ValueError:
        return None
    if not isinstance(stored, dict) or stored.get("folds_sha256") != sha256_file(csv):
        return None
    return stored


def _keep_existing(
    stored: dict[str, Any] | None,
    checksum: str,
    k: int | None,
    seed: int | None,
    group_by: str | None,
) -> bool:
    """Keep the file unless the data changed or the caller asked for other settings."""
    if stored is None or stored.get("data_checksum") != checksum:
        return False
    wanted = {"k": k, "seed": seed, "group_by": group_by}
    return all(v is None or stored_setting(stored, name) == v for name, v in wanted.items())


def stored_setting(stored: dict[str, Any], name: str) -> Any:
    """A folds.json setting; files from before grouping by identity grouped duplicates."""
    return stored.get(name, "duplicates" if name == "group_by" else None)


def outdated_reason(stored: dict[str, Any], embedder_now: str | None = None) -> str | None:
    """Why a kept folds file is older than what kit makes now (embedder_now: the identity
    embedder a rebuild would use), or None."""
    group_by = stored_setting(stored, "group_by")
    if stored.get("version", 1) >= FOLDS_VERSION and group_by in GROUP_BY:
        made = stored.get("identity") or {}
        used = made.get("embedder_used", "hand-made")
        declined = made.get("face_net_declined")
        if group_by == "identity" and embedder_now == "face-net" and used != "face-net":
            if declined:
                return None  # the net was tried on these rows and set aside
            return (
                "grouped by the hand-made face descriptor; the face net is installed now and "
                "joins one person's videos: `kit folds --force` regroups"
            )
        return None
    if group_by != DEFAULT_GROUP_BY:
        return (
            f"made by the older grouping ({group_by}: one person's faces may sit in several "
            f"folds, so CV reads optimistic); `kit folds --force` regroups by {DEFAULT_GROUP_BY}"
        )
    return "made by an older kit; `kit folds --force` rebuilds it"


def write_folds(
    comp: Competition,
    k: int | None = None,
    seed: int | None = None,
    group_by: str | None = None,
    force: bool = False,
) -> FoldsResult:
    """Build and write folds.csv (+ folds.json), or keep the existing file: unchanged data and
    no other k, seed or grouping asked for (None: the file's own, else the defaults)."""
    if group_by is not None and group_by not in GROUP_BY:
        raise DataError(f"--group-by {group_by}: unknown", hint=f"use {' or '.join(GROUP_BY)}")
    data = KeypointData.load(comp.workspace.train_npz)
    checksum = data_checksum(data)
    stored = read_folds_meta(comp)
    anchors = comp_anchors(comp)
    path = comp.workspace.folds_csv
    if not force and _keep_existing(stored, checksum, k, seed, group_by):
        assert stored is not None
        frame = pd.read_csv(path, dtype={"id": str})
        frame["id"] = data.ids
        k, seed = int(stored["k"]), int(stored["seed"])
        group_by, written, outdated = (
            stored_setting(stored, "group_by"),
            False,
            outdated_reason(stored, identity.embedder_for(identity.IdentitySettings(), anchors)),
        )
    else:
        k = DEFAULT_K if k is None else k
        seed = DEFAULT_SEED if seed is None else seed
        group_by = group_by or DEFAULT_GROUP_BY
        frame, people = _make_folds(data, k, seed, group_by, anchors)
        write_text(path, frame.to_csv(index=False))
        settings = _settings(k, seed, group_by, checksum, people)
        write_json(_meta_path(comp), {**settings, "folds_sha256": sha256_file(path)})
        written, outdated, stored = True, None, dict(settings)
    table = fold_table(frame["fold"].to_numpy(), frame["group"].to_numpy(), data.complete)
    embedder = None
    if group_by == "identity" and stored is not None:
        embedder = (stored.get("identity") or {}).get("embedder_used", "hand-made")
    return FoldsResult(path, frame, table, written, k, seed, group_by, outdated, embedder)


def runs_on_other_folds(comp: Competition) -> list[str]:
    """Finished runs of `comp` trained on another folds file than the current one (they will
    not be stacked with runs on this one)."""
    stored = read_folds_meta(comp)
    if stored is None:
        return []
    others = []
    for manifest_path in sorted(comp.workspace.runs.glob("*/manifest.json")):
        try:
            run = RunManifest.load(manifest_path)
        except DataError:
            continue
        if run.folds.get("sha256") != stored["folds_sha256"]:
            others.append(run.run_id)
    return others


def load_folds(comp: Competition, data: KeypointData) -> np.ndarray:
    """(N,) fold per row of `data`, after checking the file belongs to exactly these rows."""
    path = comp.workspace.folds_csv
    rerun = f"re-run `{rebuild_command(comp)}`"
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
            f"folds file is stale: row {row} has id {frame['id'][row]}, "
            f"the cached train data has {data.ids[row]} ({len(differs)} rows differ)",
            path=path,
            hint=rerun,
        )
    folds = pd.to_numeric(frame["fold"], errors="coerce").to_numpy()
    if np.isnan(folds).any() or (folds < 0).any() or (folds != np.round(folds)).any():
        raise DataError(
            "folds file has a fold that is not a whole number >= 0", path=path, hint=rerun
        )
    folds = folds.astype(np.int64)
    _check_fold_numbers(path, folds, _file_k(comp, folds), rerun)
    return folds


def _file_k(comp: Competition, folds: np.ndarray) -> int:
    """The k the folds file was made with (folds.json, even when the CSV was edited since),
    else the number of folds it names."""
    k = _written_settings(comp).get("k")
    return k if isinstance(k, int) and k >= 1 else len(np.unique(folds))


def _check_fold_numbers(path: Path, folds: np.ndarray, k: int, rerun: str) -> None:
    """Every fold in 0..k-1 and none empty: else a run would train on an empty fold and
    score NaN, yet count as complete."""
    outside = np.flatnonzero(folds >= k)
    if len(outside):
        row = int(outside[0])
        raise DataError(
            f"row {row} has fold {folds[row]}, outside 0..{k - 1} (the file's k is {k}; "
            f"{len(outside)} rows outside)",
            path=path,
            hint=rerun,
        )
    empty = sorted(set(range(k)) - set(folds.tolist()))
    if empty:
        raise DataError(f"fold {empty[0]} has no rows (the file's k is {k})", path=path, hint=rerun)


def _written_settings(comp: Competition) -> dict[str, Any]:
    """folds.json as written, whether or not the CSV still matches it ({}: none, unreadable)."""
    try:
        stored = read_json(_meta_path(comp))
    except (OSError, ValueError):
        return {}
    return stored if isinstance(stored, dict) else {}


def rebuild_command(comp: Competition) -> str:
    """The `kit folds` call that writes the folds file again as it was made (its k, seed and
    grouping from folds.json): the same partition, so runs made on it stay valid."""
    stored = _written_settings(comp)
    words = ["kit folds", comp.name]
    for option, name in (("--k", "k"), ("--seed", "seed"), ("--group-by", "group_by")):
        value = stored_setting(stored, name) if stored else None
        if isinstance(value, int | str) and not isinstance(value, bool):
            words.append(f"{option} {value}")
    return " ".join([*words, "--force"])
