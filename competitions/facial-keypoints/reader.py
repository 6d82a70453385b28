"""Facial Keypoints Detection's four CSV files: decode and verify them (for plugin.py).

The files (names from [options] in competition.toml):

    training.csv          <name>_x,<name>_y for 15 keypoints (blank = missing), then Image
    test.csv              ImageId,Image
    IdLookupTable.csv     RowId,ImageId,FeatureName,Location: the (image, feature) pairs to predict
    SampleSubmission.csv  RowId,Location

Image is 96*96 space-separated integers 0..255, row by row. The real training.csv is ~240 MB,
so pixels are never split into Python strings: the Image fields of a block of rows are joined
into one byte buffer and decoded digit by digit with numpy (benchmarks/parse_fkd.py times it).
Every problem is a one-line DataError naming the file as the competition names it, the row
(1-based data row, or ImageId in test.csv) and the field.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import DataError

IMAGE = "Image"
IMAGE_ID = "ImageId"
LOOKUP_COLUMNS = ("RowId", "ImageId", "FeatureName", "Location")
SAMPLE_COLUMNS = ("RowId", "Location")
DEFAULT_FILES = {
    "train_file": "training.csv",
    "test_file": "test.csv",
    "lookup_file": "IdLookupTable.csv",
    "sample_submission": "SampleSubmission.csv",
}
# Rows decoded per numpy pass (~0.5 MB of text), so the temporaries stay in the CPU cache:
# 8 to 64 rows time alike; one pass over the whole file is ~2x slower (docs/benchmarks.md).
BLOCK_ROWS = 16
_SPACE = ord(" ")
_ZERO = ord("0")
_BOM = b"\xef\xbb\xbf"

RowLabel = Callable[[int], str]


def file_name(comp: Competition, key: str) -> str:
    return str(comp.options.get(key, DEFAULT_FILES[key]))


def keypoint_columns(comp: Competition) -> list[str]:
    """FKD's 30 coordinate columns in file order: left_eye_center_x, left_eye_center_y, ..."""
    return [f"{name}_{axis}" for name in comp.keypoint_names for axis in "xy"]


# --- training.csv and test.csv ---------------------------------------------------------------


def read_training(path: Path, comp: Competition) -> KeypointData:
    columns = keypoint_columns(comp)
    header, rows = _read_rows(path)
    _check_header(path, header, [*columns, IMAGE])
    coordinates, images = [], []
    for number, row in enumerate(rows, 1):
        prefix, _, image = row.rpartition(b",")
        if prefix.count(b",") != len(columns) - 1:
            fields = row.count(b",") + 1
            raise DataError(
                f"row {number} has {fields} fields, expected {len(columns) + 1}", path=path.name
            )
        coordinates.append(prefix)
        images.append(image)
    keypoints = _parse_keypoints(path, columns, coordinates)
    pixels = decode_images(path, images, comp.input_size, lambda i: f"row {i + 1}")
    ids = np.arange(len(rows), dtype=np.int64)
    return KeypointData.whole_images(pixels, keypoints, ids)


def read_test(path: Path, comp: Competition) -> KeypointData:
    header, rows = _read_rows(path)
    _check_header(path, header, [IMAGE_ID, IMAGE])
    ids = np.empty(len(rows), np.int64)
    images = []
    for number, row in enumerate(rows, 1):
        image_id, comma, image = row.partition(b",")
        if not comma:
            raise DataError(
                f"row {number} has 1 field, expected 2 ({IMAGE_ID},{IMAGE})", path=path.name
            )
        try:
            ids[number - 1] = int(image_id)
        except (ValueError, OverflowError):
            text = image_id.decode("utf-8", "replace")
            message = f"row {number}, {IMAGE_ID}: {text!r} is not an integer"
            raise DataError(message, path=path.name) from None
        images.append(image)
    _check_unique(path, IMAGE_ID, ids)
    pixels = decode_images(path, images, comp.input_size, lambda i: f"{IMAGE_ID} {ids[i]}")
    n, k = len(ids), comp.num_keypoints
    keypoints = np.full((n, k, 2), np.nan, np.float32)
    return KeypointData.whole_images(pixels, keypoints, ids)


def _read_rows(path: Path) -> tuple[list[str], list[bytes]]:
    """(header names, non-blank data lines) of a CSV; LF, CRLF and CR line ends all work."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", path=path.name) from exc
    lines = [line for line in data.removeprefix(_BOM).splitlines() if line]
    if len(lines) < 2:
        raise DataError(
            "has no data rows", path=path.name, hint="expected a header line and data rows"
        )
    header = [name.strip().strip('"') for name in lines[0].decode("utf-8", "replace").split(",")]
    return header, lines[1:]


def _check_header(path: Path, found: list[str], expected: list[str]) -> None:
    if found == expected:
        return
    missing = [c for c in expected if c not in found]
    unexpected = [c for c in found if c not in expected]
    repeated = [c for c in expected if found.count(c) > 1]
    if missing:
        problem = f"header lacks column {_names(missing)}"
        if unexpected:
            problem += f" (found {_names(unexpected)} instead)"
    elif unexpected:
        problem = f"header has unexpected column {_names(unexpected)}"
    elif repeated:
        problem = f"header repeats column {_names(repeated)}"
    else:
        at = next(i for i, (a, b) in enumerate(zip(found, expected, strict=True)) if a != b)
        problem = f"header column {at + 1} is {found[at]!r}, expected {expected[at]!r}"
    hint = f"expected the {len(expected)} columns {expected[0]},...,{expected[-1]} in that order"
    raise DataError(problem, path=path.name, hint=hint)


def _names(columns: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(c) for c in columns[:limit])
    return shown + (f" and {len(columns) - limit} more" if len(columns) > limit else "")


def _parse_keypoints(path: Path, columns: list[str], fields: list[bytes]) -> np.ndarray:
    """(N, K, 2) float32 from the coordinate part of each row; blank -> NaN, anything else
    that is not a finite number is an error."""
    text = pd.read_csv(
        io.BytesIO(b"\n".join(fields)), header=None, names=columns, dtype=str, na_filter=False
    )
    values = np.column_stack([pd.to_numeric(text[c], errors="coerce") for c in columns])
    blank = text.apply(lambda col: col.str.strip() == "").to_numpy()
    bad = ~blank & ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        cell = text.iat[row, col]
        raise DataError(f"row {row + 1}, {columns[col]}: {cell!r} is not a number", path=path.name)
    points = values.reshape(len(fields), -1, 2)
    half = np.isnan(points).any(axis=2) & ~np.isnan(points).all(axis=2)
    if half.any():
        row, k = np.argwhere(half)[0]
        given, blank_col = (2 * k, 2 * k + 1) if np.isnan(points[row, k, 1]) else (2 * k + 1, 2 * k)
        raise DataError(
            f"row {row + 1}, {columns[blank_col]}: blank while {columns[given]} is given",
            path=path.name,
            hint="a keypoint needs both coordinates or neither",
        )
    return points.astype(np.float32)


def _check_unique(path: Path, column: str, values: np.ndarray) -> None:
    unique, first, counts = np.unique(values, return_index=True, return_counts=True)
    if (counts > 1).any():
        dup = np.flatnonzero(counts > 1)[np.argmin(first[counts > 1])]
        rows = np.flatnonzero(values == unique[dup])[:2] + 1
        raise DataError(
            f"{column} {unique[dup]} appears {counts[dup]} times (rows {rows[0]} and {rows[1]})",
            path=path.name,
        )


# --- the pixel decoder -----------------------------------------------------------------------


def decode_images(path: Path, fields: Sequence[bytes], size: int, label: RowLabel) -> np.ndarray:
    """uint8 (N, size, size) from N Image fields of size*size space-separated ints 0..255.

    `label(i)` names row i in error messages ("row 17", "ImageId 5").
    """
    pixels = size * size
    out = np.empty((len(fields), pixels), np.uint8)
    for start in range(0, len(fields), BLOCK_ROWS):
        block = fields[start : start + BLOCK_ROWS]
        out[start : start + len(block)] = _decode_block(
            path, block, pixels, lambda i, start=start: label(start + i)
        )
    return out.reshape(len(fields), size, size)


def _decode_block(path: Path, block: Sequence[bytes], pixels: int, label: RowLabel) -> np.ndarray:
    buf = np.frombuffer(b" " + b" ".join(block) + b" ", np.uint8)  # spaces fence every number
    row_ends = np.cumsum([len(field) + 1 for field in block])  # index of the space after each row
    digit = buf - np.uint8(_ZERO)  # wraps around, so every non-digit byte becomes >= 10
    is_digit = digit < 10
    if np.count_nonzero(is_digit) + np.count_nonzero(buf == _SPACE) != buf.size:
        _raise_bad_character(path, buf, is_digit, row_ends, label)
    last = np.flatnonzero(is_digit[:-1] & ~is_digit[1:])  # the last digit of every number
    counts = np.diff(np.searchsorted(last, row_ends), prepend=0)
    if (counts != pixels).any():
        row = int(np.argmax(counts != pixels))
        raise DataError(
            f"{label(row)}: Image has {counts[row]} values, expected {pixels}", path=path.name
        )
    has_tens = is_digit[last - 1]
    has_hundreds = has_tens & is_digit[last - 2]
    too_long = has_hundreds & is_digit[last - 3]
    if too_long.any():
        _raise_out_of_range(path, buf, last, int(np.argmax(too_long)), pixels, label)
    values = (
        100 * (digit[last - 2] * has_hundreds).astype(np.uint16)
        + 10 * (digit[last - 1] * has_tens)
        + digit[last]
    )
    if values.max() > 255:
        _raise_out_of_range(path, buf, last, int(np.argmax(values > 255)), pixels, label)
    return values.astype(np.uint8).reshape(len(block), pixels)


def _raise_bad_character(
    path: Path, buf: np.ndarray, is_digit: np.ndarray, row_ends: np.ndarray, label: RowLabel
) -> None:
    at = int(np.argmax(~is_digit & (buf != _SPACE)))
    row = int(np.searchsorted(row_ends, at))
    raise DataError(
        f"{label(row)}: Image has an unexpected character {chr(buf[at])!r}",
        path=path.name,
        hint="expected space-separated integers 0..255",
    )


def _raise_out_of_range(
    path: Path, buf: np.ndarray, last: np.ndarray, number: int, pixels: int, label: RowLabel
) -> None:
    end = int(last[number]) + 1
    text = bytes(buf[:end]).rsplit(b" ", 1)[-1].decode()
    raise DataError(
        f"{label(number // pixels)}: pixel value {text} out of 0..255 "
        f"(pixel {number % pixels + 1} of {pixels})",
        path=path.name,
    )


# --- IdLookupTable.csv and SampleSubmission.csv ----------------------------------------------


def read_lookup(
    raw_dir: Path, comp: Competition, test_ids: np.ndarray | None = None
) -> pd.DataFrame:
    """The rows a submission must fill: RowId (int64), ImageId (int64), FeatureName (str), in
    file order. With `test_ids`, every ImageId must be one of them."""
    path = raw_dir / file_name(comp, "lookup_file")
    table = _read_small_csv(path, LOOKUP_COLUMNS)
    row_ids = _integer_column(path, table, "RowId")
    image_ids = _integer_column(path, table, IMAGE_ID)
    _check_unique(path, "RowId", row_ids)
    features = table["FeatureName"].str.strip()
    unknown = ~features.isin(keypoint_columns(comp)).to_numpy()
    if unknown.any():
        row = int(np.argmax(unknown))
        raise DataError(
            f"row {row + 1}, FeatureName: {features.iat[row]!r} is not a keypoint column",
            path=path.name,
            hint=f"expected one of {comp.num_keypoints * 2} names like left_eye_center_x",
        )
    if test_ids is not None:
        absent = ~np.isin(image_ids, test_ids)
        if absent.any():
            row = int(np.argmax(absent))
            raise DataError(
                f"row {row + 1}, ImageId: {image_ids[row]} is not in "
                f"{file_name(comp, 'test_file')}",
                path=path.name,
            )
    lookup = pd.DataFrame({"RowId": row_ids, IMAGE_ID: image_ids, "FeatureName": features})
    repeated = lookup.duplicated([IMAGE_ID, "FeatureName"]).to_numpy()
    if repeated.any():
        row = int(np.argmax(repeated))
        raise DataError(
            f"row {row + 1}: ImageId {image_ids[row]}, {features.iat[row]} is listed twice",
            path=path.name,
        )
    return lookup


def check_sample_submission(path: Path, lookup: pd.DataFrame) -> None:
    """SampleSubmission.csv must be RowId,Location with the lookup table's RowIds."""
    table = _read_small_csv(path, SAMPLE_COLUMNS)
    row_ids = _integer_column(path, table, "RowId")
    if not np.array_equal(np.sort(row_ids), np.sort(lookup["RowId"].to_numpy())):
        raise DataError(
            f"its {len(row_ids)} RowIds differ from the lookup table's {len(lookup)}",
            path=path.name,
            hint="the two files come from different competitions or versions",
        )


def _read_small_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"cannot read as CSV: {reason}", path=path.name) from exc
    _check_header(path, [str(c).strip() for c in table.columns], list(columns))
    return table


def _integer_column(path: Path, table: pd.DataFrame, column: str) -> np.ndarray:
    text = table[column].astype(str).str.strip()
    bad = ~text.str.fullmatch(r"[+-]?\d{1,18}").to_numpy(dtype=bool)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            f"row {row + 1}, {column}: {text.iat[row]!r} is not an integer", path=path.name
        )
    return text.astype(np.int64).to_numpy()


def lookup_rows(test: KeypointData, lookup: pd.DataFrame) -> np.ndarray:
    """Each lookup row's row in `test`."""
    position = {int(image_id): i for i, image_id in enumerate(test.ids.astype(np.int64))}
    return np.array([position[i] for i in lookup[IMAGE_ID].to_numpy()], np.int64)


def feature_index(comp: Competition, lookup: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(keypoint index, axis 0/1) of every lookup row's FeatureName (e.g. nose_tip_y)."""
    column = {c: i for i, c in enumerate(keypoint_columns(comp))}
    flat = lookup["FeatureName"].map(column).to_numpy(np.int64)
    return flat // 2, flat % 2
