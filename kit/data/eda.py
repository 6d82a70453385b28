"""Exploratory data analysis of the cached arrays: missing keypoints, duplicates, label outliers.

`run_eda(comp)` reads cache/train.npz and cache/test.npz and writes into work/<comp>/eda/:

    missing.csv      per keypoint: rows missing it, % missing
    patterns.csv     rows by number of present values and pattern (all / a named subset / other)
    duplicates.csv   one line per member of each exact or near-duplicate group (train and test)
    outliers.csv     every train row's shape-outlier score, worst first
    summary.json     the headline counts
    outliers.png     contact sheet of the worst outliers, keypoints drawn
    duplicates.png   contact sheet of the duplicate groups, one group per line
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.data.duplicates import DuplicateGroups, find_duplicates
from kit.data.folds import comp_anchors, fold_groups, read_folds_meta, stored_setting
from kit.workspace import atomic_path, write_json, write_text

TRUTH_COLOUR = (30, 90, 255)  # ground-truth keypoints are blue in every picture kit draws
TILE_PIXELS = 192  # faces are upscaled by an integer factor to about this size
CAPTION_HEIGHT = 14
OUTLIER_COLUMNS = 6
DUPLICATE_COLUMNS = 6
IDENTITY_LINES = 12  # the largest identity groups drawn, one line each
MIN_PATTERN_ROWS = 30  # fewer rows give no stable median of their own
MIN_POINTS = 3  # a similarity has 4 parameters: 2 points fit exactly and leave no residual


@dataclass
class EdaReport:
    """Tables of one EDA run (pandas) and the files written."""

    train_rows: int
    test_rows: int
    missing: pd.DataFrame
    patterns: pd.DataFrame
    duplicate_groups: pd.DataFrame
    duplicate_members: pd.DataFrame
    outliers: pd.DataFrame
    identity_groups: pd.DataFrame  # group, rows: the fold groups of one person, largest first
    identity_source: str  # where the groups came from
    counts: dict[str, int] = field(default_factory=dict)
    paths: dict[str, Path] = field(default_factory=dict)


# ---- missing keypoints -------------------------------------------------------------------------


def present_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """(N, K) bool: both coordinates of the keypoint are known."""
    return ~np.isnan(keypoints).any(axis=2)


def missing_table(keypoints: np.ndarray, names: tuple[str, ...]) -> pd.DataFrame:
    missing = (~present_keypoints(keypoints)).sum(axis=0)
    share = 100.0 * missing / max(len(keypoints), 1)
    return pd.DataFrame({"keypoint": list(names), "missing": missing, "missing_pct": share})


def pattern_labels(keypoints: np.ndarray, comp: Competition) -> np.ndarray:
    """(N,) per row: "all", "none", the name of the subset that is exactly present, or "other"."""
    present = present_keypoints(keypoints)
    labels = np.full(len(keypoints), "other", dtype=object)
    for name in comp.subsets:
        mask = np.zeros(comp.num_keypoints, bool)
        mask[comp.subset_indices(name)] = True
        labels[(present == mask).all(axis=1)] = name
    labels[present.all(axis=1)] = "all"
    labels[~present.any(axis=1)] = "none"
    return labels


def pattern_table(keypoints: np.ndarray, comp: Competition) -> pd.DataFrame:
    """Rows counted by number of present values (x and y count separately) and by pattern."""
    frame = pd.DataFrame(
        {
            "present_values": (~np.isnan(keypoints)).reshape(len(keypoints), -1).sum(axis=1),
            "pattern": pattern_labels(keypoints, comp),
        }
    )
    table = frame.value_counts(["present_values", "pattern"]).rename("rows").reset_index()
    table["share_pct"] = 100.0 * table["rows"] / max(len(keypoints), 1)
    return table.sort_values(["rows", "present_values"], ascending=False, ignore_index=True)


# ---- label outliers ----------------------------------------------------------------------------


def _centre(z: np.ndarray, present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row centroid over present points, and the centred points (0 where missing)."""
    zeroed = np.where(present, z, 0)
    centroid = zeroed.sum(axis=1) / np.maximum(present.sum(axis=1), 1)
    return centroid, np.where(present, zeroed - centroid[:, None], 0)


def _align(z: np.ndarray, present: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity of each row onto `target` (complex (K,), NaN = unknown).

    Fitted on the points known in both; applied to all of the row's present points.
    """
    fit = present & ~np.isnan(target)[None]
    z_centroid, zc = _centre(z, fit)
    t_centroid, tc = _centre(np.broadcast_to(np.nan_to_num(target), z.shape), fit)
    a = (np.conj(zc) * tc).sum(axis=1) / (np.abs(zc) ** 2).sum(axis=1)  # scale * rotation
    moved = a[:, None] * (z - z_centroid[:, None]) + t_centroid[:, None]
    return np.where(present, moved, np.nan)


def _normalise(shape: np.ndarray) -> np.ndarray:
    centred = shape - shape.mean()
    return centred / np.sqrt(np.mean(np.abs(centred) ** 2))


def _nanmedian_complex(z: np.ndarray) -> np.ndarray:
    """Coordinate-wise median over rows; a complex NaN may have a 0 imaginary part, so mask."""
    missing = np.isnan(z)
    real = np.where(missing, np.nan, z.real)
    imag = np.where(missing, np.nan, z.imag)
    return np.nanmedian(real, axis=0) + 1j * np.nanmedian(imag, axis=0)


def _normalise_known(shape: np.ndarray) -> np.ndarray:
    """Unit-scale, zero-centroid mean shape over its known points (NaN stays NaN)."""
    known = ~np.isnan(shape)
    out = np.full_like(shape, np.nan)
    out[known] = _normalise(shape[known])
    return out


def procrustes_outliers(keypoints: np.ndarray, iterations: int = 4) -> pd.DataFrame:
    """Per row: shape residual after a similarity alignment to the (robust) mean shape.

    Only the row's present keypoints are used. The residual RMS has 2p - 4 degrees of freedom
    (p points, 4 similarity parameters) and is divided by the mean shape's scale over the same
    points, so it is a fraction of the face size. Rows with fewer than MIN_POINTS points score
    NaN. The mean is a coordinate-wise median, so a few bad labels cannot drag it.
    """
    z = (keypoints[..., 0] + 1j * keypoints[..., 1]).astype(np.complex128)
    present = present_keypoints(keypoints)
    usable = present.sum(axis=1) >= MIN_POINTS
    if not usable.any():
        nan = np.full(len(z), np.nan)
        return pd.DataFrame({"score": nan, "points": present.sum(axis=1), "worst_keypoint": -1})
    # All-NaN columns (a keypoint nobody labelled) and degenerate rows are expected here.
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        # Start from the most complete row, so one row's pose cannot move the estimate.
        reference = int(np.argmax(present.sum(axis=1)))
        mean = _normalise_known(np.where(present[reference], z[reference], np.nan))
        for _ in range(iterations):  # generalised Procrustes: align, re-estimate the mean
            mean = _normalise_known(_nanmedian_complex(_align(z, present, mean)[usable]))
        fit = present & ~np.isnan(mean)[None]
        residual = np.where(fit, np.abs(_align(z, present, mean) - mean[None]), 0.0)
        points = fit.sum(axis=1)
        _, mean_centred = _centre(np.broadcast_to(np.nan_to_num(mean), z.shape), fit)
        scale = np.sqrt((np.abs(mean_centred) ** 2).sum(axis=1) / np.maximum(points, 1))
        score = np.sqrt((residual**2).sum(axis=1) / np.maximum(2 * points - 4, 1)) / scale
    score = np.where(points >= MIN_POINTS, score, np.nan)
    return pd.DataFrame(
        {
            "score": score,
            "points": points,
            "worst_keypoint": np.where(points >= MIN_POINTS, residual.argmax(axis=1), -1),
        }
    )


def relative_scores(scores: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Score / median score of rows with the same present keypoints.

    Keypoint sets differ in natural spread (4 points of eyes, nose and lip move with pose more
    than 15 points with rigid eyes and brows), so raw scores would rank one missing pattern
    first. Patterns with fewer than MIN_PATTERN_ROWS rows use the median over all rows.
    """
    pattern = np.unique(np.packbits(present, axis=1), axis=0, return_inverse=True)[1].ravel()
    by_pattern = pd.Series(scores).groupby(pattern).transform("median").to_numpy()
    small = np.bincount(pattern)[pattern] < MIN_PATTERN_ROWS
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no row scored: all NaN
        median = np.where(small, np.nanmedian(scores), by_pattern)
        return scores / median


def outlier_table(data: KeypointData, names: tuple[str, ...]) -> pd.DataFrame:
    """Every row's outlier scores with its id, worst first (rows without a score last)."""
    scores = procrustes_outliers(data.keypoints)
    worst = scores["worst_keypoint"].to_numpy()
    raw = scores["score"].to_numpy()
    table = pd.DataFrame(
        {
            "row": np.arange(len(data)),
            "id": data.ids,
            "relative": relative_scores(raw, present_keypoints(data.keypoints)),
            "score": raw,
            "points": scores["points"],
            "worst_keypoint": [names[k] if k >= 0 else "" for k in worst],
        }
    )
    return table.sort_values("relative", ascending=False, na_position="last", ignore_index=True)


# ---- duplicates across train and test -----------------------------------------------------------


def duplicate_tables(
    found: DuplicateGroups, splits: np.ndarray, rows: np.ndarray, ids: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(groups, members): one line per group and one per member, for pooled train+test rows."""
    members, groups = [], []
    for number, (index, exact) in enumerate(zip(found.groups, found.exact, strict=True)):
        kind = "exact" if exact else "near"
        for k in index:
            members.append((number, kind, splits[k], int(rows[k]), ids[k]))
        n_train = int((splits[index] == "train").sum())
        groups.append((number, len(index), kind, n_train, len(index) - n_train))
    members_frame = pd.DataFrame(members, columns=["group", "kind", "split", "row", "id"])
    groups_frame = pd.DataFrame(groups, columns=["group", "size", "kind", "train", "test"])
    return groups_frame, members_frame


def duplicate_counts(groups: pd.DataFrame) -> dict[str, int]:
    return {
        "duplicate_groups": len(groups),
        "exact_groups": int((groups["kind"] == "exact").sum()),
        "near_groups": int((groups["kind"] == "near").sum()),
        "rows_in_duplicate_groups": int(groups["size"].sum()),
        "train_test_groups": int(((groups["train"] > 0) & (groups["test"] > 0)).sum()),
        "train_only_groups": int((groups["test"] == 0).sum()),
        "test_only_groups": int((groups["train"] == 0).sum()),
    }


# ---- contact sheets ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    image: np.ndarray  # (S, S) uint8
    points: np.ndarray | None  # (K, 2) input pixels, NaN = missing
    caption: str


def tile_size(image_size: int) -> tuple[int, int]:
    """(width, height) of one contact-sheet tile for faces of image_size pixels."""
    side = image_size * max(1, round(TILE_PIXELS / image_size))
    return side, side + CAPTION_HEIGHT


def _draw_tile(tile: Tile, scale: int) -> Image.Image:
    side = tile.image.shape[0] * scale
    face = Image.fromarray(tile.image).resize((side, side), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (side, side + CAPTION_HEIGHT), "white")
    canvas.paste(face.convert("RGB"), (0, 0))
    draw = ImageDraw.Draw(canvas)
    if tile.points is not None:
        r = scale + 1
        for x, y in tile.points[~np.isnan(tile.points).any(axis=1)]:
            cx, cy = (x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5  # pixel centres
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=TRUTH_COLOUR, outline="white")
    draw.text((2, side + 1), tile.caption, fill="black", font=ImageFont.load_default())
    return canvas


def contact_sheet(grid: list[list[Tile | None]], image_size: int) -> Image.Image:
    """One picture of tiles laid out as `grid` (lines of tiles; None leaves a cell blank)."""
    width, height = tile_size(image_size)
    scale = width // image_size
    columns = max((len(line) for line in grid), default=1)
    sheet = Image.new("RGB", (columns * width, max(len(grid), 1) * height), "white")
    for r, line in enumerate(grid):
        for c, tile in enumerate(line):
            if tile is not None:
                sheet.paste(_draw_tile(tile, scale), (c * width, r * height))
    return sheet


def _chunks(items: list[Tile], size: int) -> list[list[Tile | None]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def outlier_sheet(data: KeypointData, outliers: pd.DataFrame) -> Image.Image:
    tiles = [
        Tile(data.images[row], data.keypoints[row], f"#{rank + 1} id {data.ids[row]} {score:.2f}")
        for rank, (row, score) in enumerate(zip(outliers["row"], outliers["relative"], strict=True))
    ]
    return contact_sheet(_chunks(tiles, OUTLIER_COLUMNS), data.images.shape[1])


def duplicate_sheet(train: KeypointData, test: KeypointData, members: pd.DataFrame) -> Image.Image:
    """One line per group, up to DUPLICATE_COLUMNS members each (test rows have no keypoints)."""
    grid = []
    for _, group in members.groupby("group", sort=True):
        line: list[Tile | None] = []
        for split, row, kind in (
            group[["split", "row", "kind"]].head(DUPLICATE_COLUMNS).itertuples(index=False)
        ):
            data = train if split == "train" else test
            points = data.keypoints[row] if split == "train" else None
            label = f"{kind} " if not line else ""
            line.append(Tile(data.images[row], points, f"{label}{split} {data.ids[row]}"))
        grid.append(line)
    return contact_sheet(grid, train.images.shape[1])


# ---- identity groups ----------------------------------------------------------------------------


def train_groups(comp: Competition, train: KeypointData) -> tuple[np.ndarray, str]:
    """(N,) fold groups of the train rows and where they came from: the folds file when it was
    grouped by identity for these rows, else grouped now."""
    stored = read_folds_meta(comp)
    if stored is not None and stored_setting(stored, "group_by") == "identity":
        frame = pd.read_csv(comp.workspace.folds_csv, dtype={"id": str})
        if frame["id"].tolist() == train.ids.astype(str).tolist():
            return frame["group"].to_numpy(), "the folds file"
    return fold_groups(train, "identity", comp_anchors(comp)), "grouped now (no identity folds yet)"


def identity_table(groups: np.ndarray) -> pd.DataFrame:
    sizes = pd.Series(groups).value_counts()
    return pd.DataFrame({"group": sizes.index.to_numpy(), "rows": sizes.to_numpy()})


def identity_counts(table: pd.DataFrame) -> dict[str, int]:
    rows = table["rows"]
    return {
        "identity_groups": len(table),
        "identity_singletons": int((rows == 1).sum()),
        "largest_identity_group": int(rows.max()) if len(rows) else 0,
        "rows_in_shared_identity_groups": int(rows[rows > 1].sum()),
    }


def identity_sheet(train: KeypointData, groups: np.ndarray, table: pd.DataFrame) -> Image.Image:
    """One line per large group: up to DUPLICATE_COLUMNS of its faces, spread over the group."""
    grid = []
    for group, size in table.head(IDENTITY_LINES).itertuples(index=False):
        rows = np.flatnonzero(groups == group)
        picks = rows[np.linspace(0, len(rows) - 1, min(len(rows), DUPLICATE_COLUMNS)).astype(int)]
        line: list[Tile | None] = [
            Tile(train.images[r], None, f"{'group ' + str(group) + ': ' if i == 0 else ''}"
                 f"{size if i == 0 else train.ids[r]}")
            for i, r in enumerate(picks)
        ]  # fmt: skip
        grid.append(line)
    return contact_sheet(grid, train.images.shape[1])


# ---- the whole run -------------------------------------------------------------------------------


def pooled_duplicates(train: KeypointData, test: KeypointData) -> tuple[pd.DataFrame, ...]:
    """Duplicate groups over train and test together, so train/test leakage shows."""
    pooled = np.concatenate([train.images, test.images])
    splits = np.array(["train"] * len(train) + ["test"] * len(test))
    rows = np.concatenate([np.arange(len(train)), np.arange(len(test))])
    ids = np.concatenate([train.ids.astype(object), test.ids.astype(object)])
    return duplicate_tables(find_duplicates(pooled), splits, rows, ids)


def _write_outputs(
    folder: Path,
    tables: dict[str, pd.DataFrame],
    counts: dict[str, int],
    sheets: dict[str, Image.Image | None],
) -> dict[str, Path]:
    """Write CSVs, summary.json and PNGs atomically; a sheet of None removes a stale PNG."""
    paths = {}
    for name, frame in tables.items():
        paths[name] = folder / f"{name}.csv"
        write_text(paths[name], frame.to_csv(index=False, float_format="%.4f"))
    paths["summary"] = folder / "summary.json"
    write_json(paths["summary"], counts)
    for name, sheet in sheets.items():
        path = folder / f"{name}.png"
        if sheet is None:  # nothing to show: no picture rather than a stale one
            path.unlink(missing_ok=True)
            continue
        with atomic_path(path) as tmp:
            sheet.save(tmp, format="PNG")
        paths[f"{name}_png"] = path
    return paths


def run_eda(comp: Competition, top: int = 24) -> EdaReport:
    """Analyse the cached train/test arrays and write tables and contact sheets to eda/."""
    ws = comp.workspace
    train, test = KeypointData.load(ws.train_npz), KeypointData.load(ws.test_npz)
    missing = missing_table(train.keypoints, comp.keypoint_names)
    patterns = pattern_table(train.keypoints, comp)
    scored = outlier_table(train, comp.keypoint_names)
    top_outliers = scored.dropna(subset=["relative"]).head(top).reset_index(drop=True)
    groups, members = pooled_duplicates(train, test)
    people, people_from = train_groups(comp, train)
    identities = identity_table(people)
    counts = {
        "train_rows": len(train),
        "test_rows": len(test),
        "complete_rows": int(train.complete.sum()),
        "scored_rows": int(scored["score"].notna().sum()),
        **duplicate_counts(groups),
        **identity_counts(identities),
    }
    tables = {
        "missing": missing,
        "patterns": patterns,
        "duplicates": members,
        "outliers": scored,
        "identity_groups": identities,
    }
    sheets = {
        "outliers": outlier_sheet(train, top_outliers) if len(top_outliers) else None,
        "duplicates": duplicate_sheet(train, test, members[members["group"] < top])
        if len(groups)
        else None,
        "identity_groups": identity_sheet(train, people, identities)
        if (identities["rows"] > 1).any()
        else None,
    }
    return EdaReport(
        train_rows=len(train),
        test_rows=len(test),
        missing=missing,
        patterns=patterns,
        duplicate_groups=groups,
        duplicate_members=members,
        outliers=top_outliers,
        identity_groups=identities,
        identity_source=people_from,
        counts=counts,
        paths=_write_outputs(ws.eda, tables, counts, sheets),
    )
