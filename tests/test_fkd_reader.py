"""The FKD reader: example round trip, one clear error per kind of bad input (direct and through
`kit fetch`), and the fkd-proxy end to end."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData, identity_transforms
from kit.data.synthetic import fkd15_from_68, make_faces
from kit.errors import DataError

N_TRAIN, N_TEST, SEED = 40, 9, 3


@pytest.fixture(scope="module")
def comp() -> Competition:
    return load_competition("facial-keypoints")


@pytest.fixture(scope="module")
def example(comp: Competition, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fkd-example")
    return comp.plugin.write_example(folder, comp, n_train=N_TRAIN, n_test=N_TEST, seed=SEED)


@pytest.fixture
def copy(example: Path, tmp_path: Path) -> Path:
    """A private copy of the example files, free to break."""
    return Path(shutil.copytree(example, tmp_path / "fkd"))


def _written_keypoints(path: Path) -> np.ndarray:
    """training.csv's coordinates as written, read with the csv module (independent of kit)."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))[1:]
    values = [[float(v) if v else np.nan for v in row[:-1]] for row in rows]
    return np.array(values, np.float64).reshape(len(rows), 15, 2)


# --- round trip ------------------------------------------------------------------------------


def test_round_trip(comp: Competition, example: Path) -> None:
    train, test = comp.plugin.load(example, comp)
    images, landmarks = make_faces(N_TRAIN + N_TEST, 96, SEED)

    assert train.images.dtype == np.uint8 and train.images.shape == (N_TRAIN, 96, 96)
    assert test.images.shape == (N_TEST, 96, 96)
    np.testing.assert_array_equal(train.images, images[:N_TRAIN])
    np.testing.assert_array_equal(test.images, images[N_TRAIN:])

    written = _written_keypoints(example / "training.csv")
    assert train.keypoints.dtype == np.float32 and train.keypoints.shape == (N_TRAIN, 15, 2)
    # float32 holds a 6-decimal value near 50 only to ~4e-6, so compare with its float32 exactly
    np.testing.assert_array_equal(train.keypoints, written.astype(np.float32))
    truth = fkd15_from_68(landmarks[:N_TRAIN])
    present = ~np.isnan(written)
    assert np.abs(written[present] - truth[present]).max() <= 5e-7  # rounded to 6 decimals

    np.testing.assert_array_equal(train.ids, np.arange(N_TRAIN))
    np.testing.assert_array_equal(test.ids, np.arange(1, N_TEST + 1))
    assert train.ids.dtype == test.ids.dtype == np.int64
    assert list(test.groups) == [str(i) for i in range(1, N_TEST + 1)]
    assert list(train.groups) == [str(i) for i in range(N_TRAIN)]
    np.testing.assert_array_equal(train.to_original, identity_transforms(N_TRAIN))
    assert np.isnan(test.keypoints).all() and test.keypoints.shape == (N_TEST, 15, 2)


def test_example_has_fkd_missingness(comp: Competition, example: Path) -> None:
    train, _ = comp.plugin.load(example, comp)
    present = ~np.isnan(train.keypoints).any(axis=2)  # (N, 15)
    eight = np.zeros(15, bool)
    eight[comp.subset_indices("eight")] = True
    only_eight = (present == eight).all(axis=1)
    complete = present.all(axis=1)
    ragged = ~only_eight & ~complete
    assert present[:, comp.keypoint_names.index("nose_tip")].all()
    assert only_eight.sum() > N_TRAIN / 2
    assert 0.15 * N_TRAIN < complete.sum() < 0.4 * N_TRAIN
    assert 2 <= ragged.sum() <= 0.2 * N_TRAIN
    assert (np.isnan(train.keypoints[..., 0]) == np.isnan(train.keypoints[..., 1])).all()


def test_example_lookup_table(comp: Competition, example: Path) -> None:
    lookup = comp.plugin.read_lookup(example, comp)
    per_image = lookup.groupby("ImageId").size()
    assert set(per_image) == {8, 30} and per_image.index.tolist() == list(range(1, N_TEST + 1))
    np.testing.assert_array_equal(lookup["RowId"], np.arange(1, len(lookup) + 1))
    eight_features = set(lookup[lookup["ImageId"] == per_image.idxmin()]["FeatureName"])
    assert eight_features == {
        f"{name}_{axis}"
        for name in ("left_eye_center", "right_eye_center", "nose_tip", "mouth_center_bottom_lip")
        for axis in "xy"
    }
    assert (example / "IdLookupTable.csv").read_text().splitlines()[1] == "1,1,left_eye_center_x,"
    sample = (example / "SampleSubmission.csv").read_text().splitlines()
    assert sample[0] == "RowId,Location" and sample[1:] == [f"{i},0" for i in lookup["RowId"]]


def test_crlf_and_no_final_newline(comp: Competition, example: Path, copy: Path) -> None:
    for name in ("training.csv", "test.csv", "IdLookupTable.csv"):
        text = (copy / name).read_bytes().rstrip(b"\n")
        (copy / name).write_bytes(text.replace(b"\n", b"\r\n"))
    train, test = comp.plugin.load(copy, comp)
    want_train, want_test = comp.plugin.load(example, comp)
    np.testing.assert_array_equal(train.images, want_train.images)
    np.testing.assert_array_equal(train.keypoints, want_train.keypoints)
    np.testing.assert_array_equal(test.images, want_test.images)
    np.testing.assert_array_equal(test.ids, want_test.ids)


# --- bad input -------------------------------------------------------------------------------


def _edit(path: Path, row: int, change: Callable[[list[str]], list[str]]) -> None:
    """Rewrite line `row` of a CSV (0 = header) through `change` on its comma-split fields."""
    lines = path.read_text().splitlines()
    lines[row] = ",".join(change(lines[row].split(",")))
    path.write_text("\n".join(lines) + "\n")


def _set_field(index: int, value: str) -> Callable[[list[str]], list[str]]:
    def change(fields: list[str]) -> list[str]:
        fields[index] = value
        return fields

    return change


def _edit_pixels(change: Callable[[list[str]], list[str]]) -> Callable[[list[str]], list[str]]:
    def on_row(fields: list[str]) -> list[str]:
        return [*fields[:-1], " ".join(change(fields[-1].split()))]

    return on_row


def _drop_column(path: Path, index: int) -> None:
    lines = [line.split(",") for line in path.read_text().splitlines()]
    path.write_text("\n".join(",".join(f[:index] + f[index + 1 :]) for f in lines) + "\n")


NOSE_TIP_Y = 21  # column index in training.csv

BAD_INPUTS: dict[str, tuple[Callable[[Path], None], str]] = {
    "renamed column": (
        lambda d: _edit(d / "training.csv", 0, _set_field(NOSE_TIP_Y, "nose_tipy")),
        r"training\.csv: header lacks column 'nose_tip_y' \(found 'nose_tipy' instead\)",
    ),
    "missing column": (
        lambda d: _drop_column(d / "training.csv", NOSE_TIP_Y),
        r"training\.csv: header lacks column 'nose_tip_y'",
    ),
    "9215 pixels": (
        lambda d: _edit(d / "training.csv", 17, _edit_pixels(lambda p: p[:-1])),
        r"training\.csv: row 17: Image has 9215 values, expected 9216",
    ),
    "pixel 300": (
        lambda d: _edit(d / "training.csv", 5, _edit_pixels(lambda p: [*p[:99], "300", *p[100:]])),
        r"training\.csv: row 5: pixel value 300 out of 0\.\.255 \(pixel 100 of 9216\)",
    ),
    "pixel 1000": (
        lambda d: _edit(d / "training.csv", 2, _edit_pixels(lambda p: ["1000", *p[1:]])),
        r"training\.csv: row 2: pixel value 1000 out of 0\.\.255 \(pixel 1 of 9216\)",
    ),
    "negative pixel": (
        lambda d: _edit(d / "training.csv", 3, _edit_pixels(lambda p: ["-4", *p[1:]])),
        r"training\.csv: row 3: Image has an unexpected character '-'",
    ),
    "keypoint abc": (
        lambda d: _edit(d / "training.csv", 5, _set_field(0, "abc")),
        r"training\.csv: row 5, left_eye_center_x: 'abc' is not a number",
    ),
    "x without y": (
        lambda d: _edit(d / "training.csv", 4, _set_field(NOSE_TIP_Y, "")),
        r"training\.csv: row 4, nose_tip_y: blank while nose_tip_x is given",
    ),
    "extra field": (
        lambda d: _edit(d / "training.csv", 6, lambda f: ["1.5", *f]),
        r"training\.csv: row 6 has 32 fields, expected 31",
    ),
    "duplicate ImageId": (
        lambda d: _edit(d / "test.csv", 3, _set_field(0, "2")),
        r"test\.csv: ImageId 2 appears 2 times \(rows 2 and 3\)",
    ),
    "ImageId not an integer": (
        lambda d: _edit(d / "test.csv", 4, _set_field(0, "4.5")),
        r"test\.csv: row 4, ImageId: '4\.5' is not an integer",
    ),
    "test pixels short": (
        lambda d: _edit(d / "test.csv", 7, _edit_pixels(lambda p: p[:9000])),
        r"test\.csv: ImageId 7: Image has 9000 values, expected 9216",
    ),
    "lookup columns": (
        lambda d: _edit(d / "IdLookupTable.csv", 0, _set_field(2, "Feature")),
        r"IdLookupTable\.csv: header lacks column 'FeatureName' \(found 'Feature' instead\)",
    ),
    "lookup feature": (
        lambda d: _edit(d / "IdLookupTable.csv", 3, _set_field(2, "nose_x")),
        r"IdLookupTable\.csv: row 3, FeatureName: 'nose_x' is not a keypoint column",
    ),
    "lookup unknown image": (
        lambda d: _edit(d / "IdLookupTable.csv", 2, _set_field(1, "99")),
        r"IdLookupTable\.csv: row 2, ImageId: 99 is not in test\.csv",
    ),
    "sample columns": (
        lambda d: _edit(d / "SampleSubmission.csv", 0, lambda f: ["Id", "Location"]),
        r"SampleSubmission\.csv: header lacks column 'RowId' \(found 'Id' instead\)",
    ),
    "sample rows": (
        lambda d: _edit(d / "SampleSubmission.csv", 1, _set_field(0, "999999")),
        r"SampleSubmission\.csv: its \d+ RowIds differ from the lookup table's \d+",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_names_file_and_problem(comp: Competition, copy: Path, case: str) -> None:
    breaks, message = BAD_INPUTS[case]
    breaks(copy)
    with pytest.raises(DataError, match=f"^{message}") as caught:
        comp.plugin.load(copy, comp)
    assert "\n" not in str(caught.value)


def test_required_files(comp: Competition) -> None:
    assert comp.plugin.required_files(comp) == [
        "training.csv",
        "test.csv",
        "IdLookupTable.csv",
        "SampleSubmission.csv",
    ]


# --- through the CLI -------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["9215 pixels", "lookup columns"])
def test_fetch_rejects_bad_files_and_keeps_cache(
    comp: Competition, example: Path, copy: Path, cli, case: str
) -> None:
    good = cli("fetch", "facial-keypoints", "--from", example)
    assert good.code == 0, good.err
    cache = {p: p.read_bytes() for p in (comp.workspace.train_npz, comp.workspace.test_npz)}
    checksums = comp.workspace.checksums.read_bytes()

    breaks, message = BAD_INPUTS[case]
    breaks(copy)
    bad = cli("fetch", "facial-keypoints", "--from", copy)
    assert bad.code != 0
    lines = bad.messages.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in bad.err, bad.err
    assert message.split(":")[0].replace("\\", "") in lines[0]  # names the file
    assert {p: p.read_bytes() for p in cache} == cache
    assert comp.workspace.checksums.read_bytes() == checksums
    assert len(KeypointData.load(comp.workspace.train_npz)) == N_TRAIN


# --- the fkd-proxy (../shared/data) ----------------------------------------------------------


def test_fetch_fkd_proxy(comp: Competition, shared_data: Path, cli) -> None:
    source = shared_data / "fkd-proxy"
    first = cli("fetch", "facial-keypoints", "--from", source)
    assert first.code == 0, first.err
    ws = comp.workspace
    train, test = KeypointData.load(ws.train_npz), KeypointData.load(ws.test_npz)
    assert len(train) == 2449 and len(test) == 1783
    assert train.complete.sum() == 841
    assert train.images.dtype == test.images.dtype == np.uint8
    assert train.images.shape == (2449, 96, 96) and test.images.shape == (1783, 96, 96)
    assert sorted(test.ids) == list(range(1, 1784))
    means = np.nanmean(train.keypoints, axis=0)
    assert means[0, 0] > means[1, 0] + 20  # the subject's left eye is on the image's right
    assert not np.isnan(train.keypoints[:, comp.keypoint_names.index("nose_tip")]).any()

    lookup = comp.plugin.read_lookup(ws.raw, comp, test_ids=test.ids)
    assert len(lookup) == 27124 and (lookup.groupby("ImageId").size() == 8).sum() == 1190

    stamps = {p: p.stat().st_mtime_ns for p in (ws.train_npz, ws.test_npz, ws.checksums)}
    second = cli("fetch", "facial-keypoints", "--from", source)
    assert second.code == 0 and "up to date" in second.out
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
