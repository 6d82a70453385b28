"""FKD's submission file: IdLookupTable.csv's rows filled as ``RowId,Location``, and its checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition, sibling_module
from kit.data.arrays import KeypointData
from kit.errors import DataError
from kit.workspace import write_text

reader = sibling_module(__file__, "reader")
IMAGE_ID, read_lookup = reader.IMAGE_ID, reader.read_lookup

SUBMISSION_COLUMNS = ("RowId", "Location")


def write_submission(
    path: Path,
    comp: Competition,
    raw_dir: Path,
    test: KeypointData,
    predictions: np.ndarray,
    subset_predictions: dict[str, np.ndarray] | None = None,
) -> dict[str, int]:
    """Fill IdLookupTable.csv from (M, K, 2) input-pixel `predictions` of the test rows and
    write ``RowId,Location`` to `path` (validated first, written atomically).

    An image whose requested features all belong to the subset of competition.toml's
    ``[submit_split]`` ("eight") takes its values from ``subset_predictions[that subset]`` when
    given (the seeds' "8 + 30 combined" submission); every other image takes `predictions`.
    Locations are clipped to [0, input_size].
    """
    lookup = read_lookup(raw_dir, comp, test_ids=test.ids)
    row = reader.lookup_rows(test, lookup)
    keypoint, axis = reader.feature_index(comp, lookup)
    split = comp.submit_split.subset if subset_predictions and comp.submit_split else None
    short = _short_images(comp, lookup, split) if split else np.zeros(len(lookup), bool)
    values = np.asarray(predictions, np.float64)[row, keypoint, axis]
    if short.any():
        second = np.asarray(subset_predictions[split], np.float64)
        values = np.where(short, second[row, keypoint, axis], values)
    missing = ~np.isfinite(values)
    if missing.any():
        at = int(np.argmax(missing))
        raise DataError(
            f"no prediction for ImageId {lookup[IMAGE_ID].iat[at]}, "
            f"{lookup['FeatureName'].iat[at]}",
            hint="the predictions do not cover every keypoint the lookup table asks for",
        )
    clipped = np.clip(values, 0.0, float(comp.input_size))
    frame = pd.DataFrame({"RowId": lookup["RowId"].to_numpy(), "Location": clipped})
    check_submission_frame(frame, lookup, comp, shown=path.name)
    write_text(path, frame.to_csv(index=False, float_format="%.4f", lineterminator="\n"))
    images = lookup.drop_duplicates(IMAGE_ID)
    return {
        "rows": len(frame),
        "images": len(images),
        "images_from_subset": int(short[images.index].sum()),
        "values_clipped": int(np.count_nonzero(clipped != values)),
    }


def _short_images(comp: Competition, lookup: pd.DataFrame, subset: str) -> np.ndarray:
    """(rows,) True where the row's image asks only for features of `subset`."""
    names = {comp.keypoint_names[k] for k in comp.subset_indices(subset)}
    in_subset = lookup["FeatureName"].str.rsplit("_", n=1).str[0].isin(names)
    return in_subset.groupby(lookup[IMAGE_ID]).transform("all").to_numpy(bool)


def check_submission_frame(
    frame: pd.DataFrame, lookup: pd.DataFrame, comp: Competition, shown: str = "submission"
) -> None:
    """RowId,Location; every lookup RowId exactly once and nothing else; finite Locations in
    [0, input_size]."""
    if tuple(frame.columns) != SUBMISSION_COLUMNS:
        raise DataError(
            f"header is {','.join(map(str, frame.columns))}, expected RowId,Location", path=shown
        )
    row_ids = pd.to_numeric(frame["RowId"], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(row_ids).all() or (row_ids != np.round(row_ids)).any():
        raise DataError("a RowId is not an integer", path=shown)
    counts = pd.Series(row_ids.astype(np.int64)).value_counts()
    if (counts > 1).any():
        raise DataError(f"RowId {counts.index[counts > 1][0]} appears twice", path=shown)
    expected = set(lookup["RowId"].tolist())
    extra, absent = set(counts.index) - expected, expected - set(counts.index)
    if extra or absent:
        what = f"RowId {min(extra)} is not in the lookup table" if extra else ""
        what = what or f"RowId {min(absent)} is missing ({len(absent)} rows)"
        raise DataError(what, path=shown)
    location = pd.to_numeric(frame["Location"], errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(location) | (location < 0) | (location > comp.input_size)
    if bad.any():
        at = int(np.argmax(bad))
        raise DataError(
            f"RowId {int(row_ids[at])}: Location {frame['Location'].iat[at]!r} is not a number "
            f"in [0, {comp.input_size}]",
            path=shown,
        )


def check_submission(path: Path, comp: Competition, raw_dir: Path, test: KeypointData) -> None:
    """Validate a written submission file against the lookup table of the `test` images."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read as CSV: {exc}", path=path) from exc
    lookup = read_lookup(raw_dir, comp, test_ids=test.ids)
    check_submission_frame(frame, lookup, comp, shown=str(path))
