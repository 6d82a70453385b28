"""A small synthetic FKD in the exact file formats (`kit demo`), its answers and their score.

`write_example` draws faces (kit.data.synthetic) with FKD's missing-keypoint pattern and an
IdLookupTable.csv like the real one; `write_example_answers` keeps the test faces' true
keypoints, and `score_example` / `score_example_submission` score against them as Kaggle would.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kit.competition import Competition, sibling_module
from kit.data.arrays import KeypointData
from kit.data.synthetic import fkd15_from_68, make_faces, sample_shapes
from kit.errors import DataError
from kit.workspace import write_text

reader = sibling_module(__file__, "reader")
IMAGE, IMAGE_ID = reader.IMAGE, reader.IMAGE_ID
file_name, keypoint_columns = reader.file_name, reader.keypoint_columns
read_lookup = reader.read_lookup


# --- the raw files ---------------------------------------------------------------------------


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
    _write_csv(folder / file_name(comp, "lookup_file"), reader.LOOKUP_COLUMNS, lookup_rows)
    _write_csv(folder / file_name(comp, "sample_submission"), reader.SAMPLE_COLUMNS, sample_rows)
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


# --- the test faces' answers and their score -------------------------------------------------


def example_test_truth(
    comp: Competition, n_train: int = 64, n_test: int = 16, seed: int = 0
) -> np.ndarray:
    """(n_test, K, 2) true keypoints of `write_example`'s test images (same seed), without
    drawing the faces again: `make_faces` samples every shape before it renders any."""
    shapes = sample_shapes(n_train + n_test, comp.input_size, np.random.default_rng(seed))
    return fkd15_from_68(shapes)[n_train:].astype(np.float64)


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
