"""Kaggle "Facial Keypoints Detection" (FKD): read and verify its CSV files; write a small example.

The files (names from [options] in competition.toml):

    training.csv          <name>_x,<name>_y for 15 keypoints (blank = missing), then Image
    test.csv              ImageId,Image
    IdLookupTable.csv     RowId,ImageId,FeatureName,Location: the (image, feature) pairs to predict
    SampleSubmission.csv  RowId,Location

Image is 96*96 space-separated integers 0..255, row by row. The real training.csv is ~240 MB,
so pixels are never split into Python strings: the Image fields of a block of rows are joined
into one byte buffer and decoded digit by digit with numpy (benchmarks/parse_fkd.py times it).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.data.crops import crop_square, luma, square_crop
from kit.data.synthetic import fkd15_from_68, make_faces, sample_shapes
from kit.errors import DataError
from kit.workspace import write_text

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


# --- the plug-in interface -------------------------------------------------------------------


def required_files(comp: Competition) -> list[str]:
    return [file_name(comp, key) for key in DEFAULT_FILES]


def load(raw_dir: Path, comp: Competition) -> tuple[KeypointData, KeypointData]:
    """Parse and verify all four files; returns (train, test) at comp.input_size.

    A DataError names the file as the competition names it (fetch parses in a staging folder),
    the row (1-based data row, or ImageId in test.csv) and the field.
    """
    train = read_training(raw_dir / file_name(comp, "train_file"), comp)
    test = read_test(raw_dir / file_name(comp, "test_file"), comp)
    lookup = read_lookup(raw_dir, comp, test_ids=test.ids)
    check_sample_submission(raw_dir / file_name(comp, "sample_submission"), lookup)
    return train, test


def test_keypoints(raw_dir: Path, comp: Competition, test: KeypointData) -> np.ndarray:
    """(M, K) bool: the keypoints IdLookupTable.csv asks for each test image (x or y), in
    `test`'s row order; ``--target-set sources`` routes an image by them (kit.training.sources):
    the 8 values of the "eight" subset to the "eight" source's head, 30 to the "full" one's."""
    lookup = read_lookup(raw_dir, comp, test_ids=test.ids)
    keypoint, _ = _feature_index(comp, lookup)
    asked = np.zeros((len(test), comp.num_keypoints), bool)
    asked[_test_rows(test, lookup), keypoint] = True
    return asked


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


# --- a user's photo (kit predict) ------------------------------------------------------------

# FKD's 96x96 images are faces framed alike: the eyes about 36 px apart at y = 38, the mouth at
# y = 76. A photo's face box becomes that framing as a square of PHOTO_CROP_SIDE box sides whose
# centre lies PHOTO_CROP_SHIFT box sides from the box's centre, resized to input_size.
# Calibrated by benchmarks/fkd_photo_crop.py: OpenCV's Haar frontal-face boxes (what
# `kit predict` detects with) on the 1037 ibug-68-proxy training photos where one matched the
# labelled face, the 68 landmarks turned into FKD's keypoints, and the least-squares square
# that puts the mean of the nine keypoints whose iBUG and FKD markup agree (eye centres and
# corners, mouth corners, top lip) on FKD's mean positions: side 0.980, centre (-0.002, -0.012).
# Their means land within 1.2 px of FKD's in each coordinate; one face's spread is 4-6 px
# (docs/benchmarks.md, "kit predict").
PHOTO_CROP_SIDE = 0.98
PHOTO_CROP_SHIFT = (0.0, -0.012)
PHOTO_PAD = "edge"  # outside the photo: its border replicated


def photo_needs_face(comp: Competition) -> bool:
    """The network sees a face crop: a photo needs a face box (--box, or a detector's)."""
    return True


def photo_input(
    image: np.ndarray, comp: Competition, box: tuple[float, float, float, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """A photo's face framed as FKD frames its faces (see PHOTO_CROP_SIDE), as a gray
    (input_size, input_size) crop, and its to_original affine. A box that is not square
    counts by its longer side."""
    if box is None:
        raise DataError(f"{comp.name} needs a face box for a photo")
    x, y, w, h = map(float, box)
    longer = max(w, h)
    side = PHOTO_CROP_SIDE * longer
    centre_x = x + w / 2 + PHOTO_CROP_SHIFT[0] * longer
    centre_y = y + h / 2 + PHOTO_CROP_SHIFT[1] * longer
    size = comp.input_size
    transform = square_crop(centre_x - side / 2, centre_y - side / 2, side, size)
    transform = transform.astype(np.float32)
    return crop_square(luma(image), transform, size, PHOTO_PAD), transform


# --- a small synthetic competition in the exact formats --------------------------------------


def write_example(
    folder: Path, comp: Competition, n_train: int = 64, n_test: int = 16, seed: int = 0
) -> Path:
    """Write training.csv, test.csv, IdLookupTable.csv and SampleSubmission.csv of synthetic
    faces (kit.data.synthetic) with FKD's missing-keypoint pattern; returns `folder`."""
    folder = Path(folder)
    images, landmarks = make_faces(n_train + n_test, comp.input_size, seed)
    keypoints = fkd15_from_68(landmarks).astype(np.float64)
    rng = np.random.default_rng([seed, 1])
    train_points = blank_like_fkd(keypoints[:n_train], comp, rng)
    columns = keypoint_columns(comp)
    train_rows = [
        ",".join(_format_coordinate(v) for v in points.ravel()) + "," + _format_image(image)
        for points, image in zip(train_points, images[:n_train], strict=True)
    ]
    test_ids = range(1, n_test + 1)
    test_rows = [
        f"{i},{_format_image(img)}" for i, img in zip(test_ids, images[n_train:], strict=True)
    ]
    lookup_rows = [
        f"{row_id},{image_id},{feature},"
        for row_id, (image_id, feature) in enumerate(_lookup_pairs(comp, n_test), 1)
    ]
    sample_rows = [f"{row_id},0" for row_id in range(1, len(lookup_rows) + 1)]
    _write_csv(folder / file_name(comp, "train_file"), [*columns, IMAGE], train_rows)
    _write_csv(folder / file_name(comp, "test_file"), [IMAGE_ID, IMAGE], test_rows)
    _write_csv(folder / file_name(comp, "lookup_file"), LOOKUP_COLUMNS, lookup_rows)
    _write_csv(folder / file_name(comp, "sample_submission"), SAMPLE_COLUMNS, sample_rows)
    return folder


def blank_like_fkd(points: np.ndarray, comp: Competition, rng: np.random.Generator) -> np.ndarray:
    """Copy of (N, K, 2) `points` with FKD's gaps: ~30% of rows complete, the rest keep only the
    "eight" subset; a few rows are ragged (a complete row loses 1-3 keypoints, an "eight" row
    loses 1). nose_tip is never blanked, as in FKD."""
    out = points.copy()
    n = len(points)
    eight = comp.subset_indices("eight")
    nose = comp.keypoint_names.index("nose_tip")
    others = [k for k in range(comp.num_keypoints) if k not in eight]
    order = rng.permutation(n)
    n_complete = max(1, round(0.3 * n)) if n else 0
    complete_rows, eight_rows = order[:n_complete], order[n_complete:]
    out[np.ix_(eight_rows, others)] = np.nan
    droppable = [k for k in range(comp.num_keypoints) if k != nose]
    for row in complete_rows[: max(1, n_complete // 6)]:
        out[row, rng.choice(droppable, size=rng.integers(1, 4), replace=False)] = np.nan
    for row in eight_rows[: max(1, len(eight_rows) // 12)]:
        out[row, rng.choice([k for k in eight if k != nose])] = np.nan
    return out


def _lookup_pairs(comp: Competition, n_test: int) -> list[tuple[int, str]]:
    """Like the real table: the first third of the test images ask all 30 coordinates, the
    rest only the "eight" subset's 8."""
    columns = keypoint_columns(comp)
    eight = {comp.keypoint_names[k] for k in comp.subset_indices("eight")}
    eight_columns = [c for c in columns if c.rsplit("_", 1)[0] in eight]
    n_full = -(-n_test // 3)
    return [
        (image_id, feature)
        for image_id in range(1, n_test + 1)
        for feature in (columns if image_id <= n_full else eight_columns)
    ]


def _format_coordinate(value: float) -> str:
    """Up to 6 decimals as in FKD's files; blank when missing."""
    return "" if np.isnan(value) else f"{value:.6f}".rstrip("0").rstrip(".")


def _format_image(image: np.ndarray) -> str:
    return " ".join(map(str, image.ravel().tolist()))


def _write_csv(path: Path, header: Sequence[str], rows: list[str]) -> None:
    write_text(path, "\n".join([",".join(header), *rows]) + "\n")


# --- the submission file ---------------------------------------------------------------------

SUBMISSION_COLUMNS = ("RowId", "Location")
SUBSET_FOR_SHORT_ROWS = "eight"  # the seeds' "8 + 30 combined" submission


def example_test_truth(
    comp: Competition, n_train: int = 64, n_test: int = 16, seed: int = 0
) -> np.ndarray:
    """(n_test, K, 2) true keypoints of `write_example`'s test images (same seed), without
    drawing the faces again: `make_faces` samples every shape before it renders any."""
    shapes = sample_shapes(n_train + n_test, comp.input_size, np.random.default_rng(seed))
    return fkd15_from_68(shapes)[n_train:].astype(np.float64)


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

    An image whose requested features all belong to the "eight" subset takes its values from
    ``subset_predictions["eight"]`` when given (the seeds' "8 + 30 combined" submission); every
    other image takes `predictions`. Locations are clipped to [0, input_size].
    """
    lookup = read_lookup(raw_dir, comp, test_ids=test.ids)
    row = _test_rows(test, lookup)
    keypoint, axis = _feature_index(comp, lookup)
    short = _short_images(comp, lookup) if subset_predictions else np.zeros(len(lookup), bool)
    values = np.asarray(predictions, np.float64)[row, keypoint, axis]
    if short.any():
        eight = np.asarray(subset_predictions[SUBSET_FOR_SHORT_ROWS], np.float64)
        values = np.where(short, eight[row, keypoint, axis], values)
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


def _test_rows(test: KeypointData, lookup: pd.DataFrame) -> np.ndarray:
    position = {int(image_id): i for i, image_id in enumerate(test.ids.astype(np.int64))}
    return np.array([position[i] for i in lookup[IMAGE_ID].to_numpy()], np.int64)


def _feature_index(comp: Competition, lookup: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(keypoint index, axis 0/1) of every lookup row's FeatureName (e.g. nose_tip_y)."""
    column = {c: i for i, c in enumerate(keypoint_columns(comp))}
    flat = lookup["FeatureName"].map(column).to_numpy(np.int64)
    return flat // 2, flat % 2


def _short_images(comp: Competition, lookup: pd.DataFrame) -> np.ndarray:
    """(rows,) True where the row's image asks only for features of the "eight" subset."""
    names = {comp.keypoint_names[k] for k in comp.subset_indices(SUBSET_FOR_SHORT_ROWS)}
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


# ---------------------------------------------------------------- the example's answers and score


def write_example_answers(
    path: Path, comp: Competition, n_train: int = 64, n_test: int = 16, seed: int = 0
) -> None:
    """The true keypoints of `write_example`'s test images as ``ImageId`` + coordinate columns
    (ImageId 1..n_test, as test.csv numbers them)."""
    truth = example_test_truth(comp, n_train, n_test, seed)
    answers = pd.DataFrame(truth.reshape(len(truth), -1), columns=keypoint_columns(comp))
    answers.insert(0, IMAGE_ID, np.arange(1, len(truth) + 1))
    write_text(path, answers.to_csv(index=False, float_format="%.4f"))


def _answers_of_lookup(answers_path: Path, lookup: pd.DataFrame) -> np.ndarray:
    if not answers_path.is_file():
        raise DataError("no example answers", path=answers_path, hint="run `kit demo` first")
    by_image = pd.read_csv(answers_path).set_index(IMAGE_ID)
    pairs = zip(lookup[IMAGE_ID], lookup["FeatureName"], strict=True)
    return np.array([by_image.at[i, f] for i, f in pairs], np.float64)


def score_example(
    comp: Competition,
    raw_dir: Path,
    answers_path: Path,
    test: KeypointData,
    predictions: np.ndarray,
) -> float:
    """RMSE of (M, K, 2) test predictions over the rows IdLookupTable.csv asks for, as Kaggle
    scores a submission made from them."""
    lookup = read_lookup(raw_dir, comp, test_ids=test.ids)
    position = {int(i): row for row, i in enumerate(test.ids)}
    column = {c: i for i, c in enumerate(keypoint_columns(comp))}
    rows = np.array([position[int(i)] for i in lookup[IMAGE_ID]])
    flat = lookup["FeatureName"].map(column).to_numpy()
    values = np.clip(predictions[rows, flat // 2, flat % 2], 0, comp.input_size)
    truth = _answers_of_lookup(answers_path, lookup)
    return float(np.sqrt(np.mean((values - truth) ** 2)))


def score_example_submission(
    comp: Competition, raw_dir: Path, answers_path: Path, csv_path: Path
) -> float:
    """Kaggle's score of a submission file: RMSE over its rows against the answers."""
    lookup = read_lookup(raw_dir, comp)
    submitted = pd.read_csv(csv_path).set_index("RowId")["Location"]
    values = submitted.loc[lookup["RowId"]].to_numpy(np.float64)
    truth = _answers_of_lookup(answers_path, lookup)
    return float(np.sqrt(np.mean((values - truth) ** 2)))
