"""kit predict: runs (one model, 8-30, one head per source) and a stack (its saved
meta-models) reproduce their own test.npy through the predict path; photos that pad or scale a
cached test image come back in their own pixels; --box, bad photos, the detector (missing,
injected, OpenCV's), whole-photo plug-ins, and ibug-68's framing of a photo as its loader
frames a test face."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_ibug_reader import TEST_XML, xml_faces
from test_stack import TINY_NAME, one_thread, tiny_competition, tiny_run

import kit.training.runs
from kit.competition import Competition, PhotoPlugin, load_competition
from kit.data.arrays import KeypointData
from kit.errors import DataError, KitError
from kit.predict import HaarDetector, parse_box, predict_images, predict_photos
from kit.predict.output import COLUMNS, CSV_NAME, JSON_NAME, POINT_COLOUR
from kit.predict.photos import read_photo
from kit.stack import StackResult, stack
from kit.store import RunResult
from kit.submit import resolve_source
from kit.training.sources import scored_keypoints

TARGET_SETS = ("masked", "8-30", "sources")


@dataclass
class Trained:
    root: Path
    runs: dict[str, RunResult]
    stack: StackResult


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The tiny facial-keypoints competition (32 px) with a 1-epoch run of each target set and
    a stack of the three: trained once for the module (about 10 s)."""
    root = tmp_path_factory.mktemp("predict")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KIT_WORK", str(root / "work"))
        mp.setattr(kit.training.runs, "configure_cpu_threads", one_thread)
        comp = tiny_competition(root, mp)
        runs = {target: tiny_run(comp, target_set=target) for target in TARGET_SETS}
        stacked = stack(comp, list(runs.values()))
    return Trained(root, runs, stacked)


@pytest.fixture
def tiny(trained: Trained, monkeypatch: pytest.MonkeyPatch) -> Competition:
    """The trained competition, loaded afresh (a test may patch its plug-in module)."""
    monkeypatch.setenv("KIT_WORK", str(trained.root / "work"))
    monkeypatch.setenv("KIT_COMPETITIONS", str(trained.root / "competitions"))
    monkeypatch.setenv("KIT_THREADS", "1")  # predict's CPU threads: one on this shared box
    return load_competition(TINY_NAME)


@pytest.fixture
def test_split(tiny: Competition) -> KeypointData:
    return KeypointData.load(tiny.workspace.test_npz)


def rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def photo_of(image: np.ndarray, scale: int, at: tuple[int, int], size: tuple[int, int]):
    """An RGB photo of `size` (w, h): `image` scaled up `scale` times (each pixel a block) with
    its top-left corner at `at`, on a gray ground."""
    photo = np.full((size[1], size[0]), 128, np.uint8)
    big = np.kron(image, np.ones((scale, scale), np.uint8))
    photo[at[1] : at[1] + big.shape[0], at[0] : at[0] + big.shape[1]] = big
    return rgb(photo)


def box_for_crop(comp: Competition, x0: float, y0: float, side: float) -> tuple:
    """The face box that facial-keypoints' framing turns into the square (x0, y0, side)."""
    plugin = comp.plugin
    w = side / plugin.PHOTO_CROP_SIDE
    cx = x0 + side / 2 - plugin.PHOTO_CROP_SHIFT[0] * w
    cy = y0 + side / 2 - plugin.PHOTO_CROP_SHIFT[1] * w
    return (cx - w / 2, cy - w / 2, w, w)


def save(path: Path, photo: np.ndarray) -> Path:
    Image.fromarray(photo).save(path)
    return path


def box_text(box: tuple) -> str:
    return ",".join(f"{v:.6f}" for v in box)


def read_points(csv: Path, image: Path) -> np.ndarray:
    frame = pd.read_csv(csv)
    rows = frame[frame["image"] == str(image)]
    return rows[["x", "y"]].to_numpy()


# ------------------------------------------------------------------------- runs and stacks


@pytest.mark.parametrize("target_set", TARGET_SETS)
def test_a_run_predicts_its_own_test_split_as_its_test_npy(
    trained: Trained, tiny: Competition, test_split: KeypointData, target_set: str
) -> None:
    run = trained.runs[target_set]
    scored = scored_keypoints(tiny, test_split) if target_set == "sources" else None
    source = resolve_source(tiny, run.run_id)
    pred = predict_images(tiny, source, test_split.images, scored, device="cpu")
    np.testing.assert_allclose(pred, run.test, atol=1e-4)


def test_a_run_with_heads_routes_each_image_by_what_is_asked_of_it(
    trained: Trained, tiny: Competition, test_split: KeypointData
) -> None:
    """Without the lookup table's question a photo goes to the head with every keypoint,
    which differs from test.npy on the images that ask for the eight keypoints only."""
    source = resolve_source(tiny, trained.runs["sources"].run_id)
    asked_all = predict_images(tiny, source, test_split.images, device="cpu")
    eight_only = ~scored_keypoints(tiny, test_split).all(axis=1)
    assert eight_only.any()
    np.testing.assert_allclose(asked_all[~eight_only], source.test[~eight_only], atol=1e-4)
    assert np.abs(asked_all[eight_only] - source.test[eight_only]).max() > 1e-3


def test_a_stack_predicts_its_own_test_split_as_its_test_npy(
    trained: Trained, tiny: Competition, test_split: KeypointData
) -> None:
    """With the meta-models `kit stack` saved (tests/test_stack_models.py: loading, old stacks,
    damaged files)."""
    source = resolve_source(tiny, trained.stack.stack_id)
    assert len(source.run_ids) == 3
    scored = scored_keypoints(tiny, test_split)
    pred = predict_images(tiny, source, test_split.images, scored, device="cpu")
    np.testing.assert_allclose(pred, trained.stack.test, atol=1e-4)


# ------------------------------------------------------------------------- photos


def test_a_padded_test_image_gives_the_stacks_keypoints_moved_in_the_photo(
    trained: Trained, tiny: Competition, test_split: KeypointData, tmp_path: Path, cli
) -> None:
    at, size = (17, 9), tiny.input_size
    photo = save(tmp_path / "padded.png", photo_of(test_split.images[0], 1, at, (80, 60)))
    box = box_for_crop(tiny, *at, size)
    out = tmp_path / "out"
    done = cli("predict", TINY_NAME, photo, "--box", box_text(box), "--from",
               trained.stack.stack_id, "--out", out)  # fmt: skip
    assert done.code == 0, done.err
    assert f"{photo}: box " in done.out and trained.stack.stack_id in done.out
    points = read_points(out / CSV_NAME, photo)
    np.testing.assert_allclose(points, trained.stack.test[0] + at, atol=2e-3)
    frame = pd.read_csv(out / CSV_NAME)
    assert tuple(frame.columns) == COLUMNS
    assert list(frame["keypoint"]) == list(tiny.keypoint_names)
    np.testing.assert_allclose(frame[["box_x", "box_y", "box_w", "box_h"]].iloc[0], box, atol=1e-3)
    assert set(frame["box_from"]) == {"--box"}
    picture = np.asarray(Image.open(out / "padded.png").convert("RGB"))
    assert picture.shape == (60, 80, 3)
    x, y = np.round(points[0]).astype(int)
    assert tuple(picture[y, x]) == POINT_COLOUR
    record = json.loads((out / JSON_NAME).read_text())
    assert record["source"]["id"] == trained.stack.stack_id and record["failures"] == []


def test_a_scaled_test_image_is_framed_back_to_it_and_mapped_by_the_scale(
    trained: Trained, tiny: Competition, test_split: KeypointData, tmp_path: Path
) -> None:
    scale, at, size = 3, (40, 25), tiny.input_size
    photo = save(tmp_path / "scaled.png", photo_of(test_split.images[1], scale, at, (200, 150)))
    box = box_for_crop(tiny, *at, scale * size)
    run = trained.runs["masked"]
    result = predict_photos(tiny, [photo], source=run.run_id, box=box, device="cpu")
    framed = result.photos[0].framed
    difference = np.abs(framed.input.astype(int) - test_split.images[1].astype(int))
    assert difference.mean() < 8  # the same face, a little blurred by the antialiased resize
    on_input = predict_images(tiny, result.source, framed.input[None], device="cpu")[0]
    expected = (on_input + 0.5) * scale - 0.5 + at  # input pixel centres -> the photo's
    np.testing.assert_allclose(result.photos[0].points, expected, atol=1e-3)
    np.testing.assert_allclose(read_points(result.csv, photo), expected, atol=2e-3)
    assert result.folder.parent == tiny.workspace.predict  # the default: a time-stamped folder
    assert (result.folder / "scaled.png").is_file()


def test_bad_photos_are_one_line_each_and_the_good_one_is_still_predicted(
    trained: Trained, tiny: Competition, test_split: KeypointData, tmp_path: Path, cli
) -> None:
    good = save(tmp_path / "good.png", photo_of(test_split.images[2], 2, (100, 100), (300, 300)))
    small = save(tmp_path / "small.png", photo_of(test_split.images[2], 1, (0, 0), (90, 90)))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    missing = tmp_path / "missing.png"
    box = box_for_crop(tiny, 100, 100, 64)  # its centre (132, 131) is outside the small photo
    out = tmp_path / "out"
    done = cli("predict", TINY_NAME, good, broken, small, missing, "--box", box_text(box),
               "--out", out)  # fmt: skip
    assert done.code == 0, done.err
    lines = done.out.splitlines()
    assert any(line.startswith(f"{broken}: cannot read the image") for line in lines)
    assert any(line.startswith(f"{missing}: cannot read the image") for line in lines)
    assert any(f"{small}: the box " in line and "outside the 90x90 photo" in line for line in lines)
    assert "3 failed" in done.out
    frame = pd.read_csv(out / CSV_NAME)
    assert set(frame["image"]) == {str(good)}
    record = json.loads((out / JSON_NAME).read_text())
    assert len(record["failures"]) == 3 and len(record["photos"]) == 1
    alone = cli("predict", TINY_NAME, broken, "--box", box_text(box), "--out", tmp_path / "none")
    assert alone.code == DataError.exit_code
    assert "none of the 1 images could be predicted" in alone.messages
    assert not (tmp_path / "none").exists()


def test_a_photo_is_read_as_displayed(tmp_path: Path) -> None:
    """EXIF orientation 6 (shown turned 90 degrees clockwise): keypoints in the shown pixels."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :5] = 255  # a white band on the stored image's left: on top once turned
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "turned.jpg"
    Image.fromarray(stored).save(path, exif=exif)
    shown = read_photo(path)
    assert shown.shape == (40, 20, 3)
    assert shown[:4].mean() > 200 and shown[-4:].mean() < 50


@pytest.mark.parametrize(
    ("text", "wrong"),
    [("1,2,3", "not x,y,w,h"), ("a,b,c,d", "not x,y,w,h"), ("1,2,0,5", "must be positive"),
     ("1,2,nan,5", "not x,y,w,h")],
)  # fmt: skip
def test_box_parsing(text: str, wrong: str) -> None:
    with pytest.raises(KitError, match=wrong):
        parse_box(text)
    assert parse_box(" 10, 20.5,30,40 ") == (10.0, 20.5, 30.0, 40.0)


def test_a_bad_box_on_the_command_line_is_one_line(tiny: Competition, tmp_path: Path, cli):
    done = cli("predict", TINY_NAME, tmp_path / "any.png", "--box", "1,2,3")
    assert done.code == 1 and done.messages.count("\n") == 1
    assert "--box '1,2,3' is not x,y,w,h" in done.messages


# ------------------------------------------------------------------------- the detector


def test_without_opencv_and_without_box_one_line_says_what_to_do(
    tiny: Competition, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` raises ImportError
    photo = save(tmp_path / "face.png", rgb(np.zeros((40, 40), np.uint8)))
    done = cli("predict", TINY_NAME, photo)
    assert done.code == 1
    assert done.messages.count("\n") == 1
    assert "kit[detect]" in done.messages and "--box" in done.messages


def test_the_largest_face_wins_and_a_photo_without_one_fails_alone(
    trained: Trained, tiny: Competition, test_split: KeypointData, tmp_path: Path
) -> None:
    at, size = (30, 20), tiny.input_size
    face = save(tmp_path / "face.png", photo_of(test_split.images[0], 1, at, (100, 80)))
    blank = save(tmp_path / "blank.png", rgb(np.zeros((50, 50), np.uint8)))
    crop = box_for_crop(tiny, *at, size)

    def detector(photo: np.ndarray) -> list:
        return [(1.0, 1.0, 5.0, 5.0), crop] if photo.any() else []

    events = []
    run = trained.runs["masked"]
    result = predict_photos(tiny, [blank, face], source=run.run_id, detector=detector,
                            out=tmp_path / "out", on_event=events.append)  # fmt: skip
    lines = [e.text for e in events if e.what == "photo"]
    assert lines[0].startswith(f"{blank}: no face found")
    assert lines[1].startswith(f"{face}: face ") and "(the largest of 2 faces)" in lines[1]
    assert [f.path for f in result.failures] == [blank]
    (photo,) = result.photos
    assert photo.framed.box == crop and photo.framed.box_from == "detector"
    np.testing.assert_allclose(photo.points, run.test[0] + at, atol=1e-3)


def test_a_detected_box_is_reframed_as_the_competition_frames_its_boxes(
    trained: Trained, tiny: Competition, test_split: KeypointData, tmp_path: Path
) -> None:
    """options.detector_box (side, dx, dy in detector box sides) turns the detector's box into
    the competition's; a --box is the competition's own and is used as given."""
    at, size = (30, 20), tiny.input_size
    face = save(tmp_path / "face.png", photo_of(test_split.images[0], 1, at, (100, 80)))
    crop = box_for_crop(tiny, *at, size)
    x, y, w, h = crop
    # The detector's box: twice the side, its centre 0.1 box sides left of the crop's.
    found = (x + w / 2 - 0.2 * w - w, y + h / 2 - h, 2 * w, 2 * h)
    calibrated = dataclasses.replace(
        tiny, options={**tiny.options, "detector_box": {"side": 0.5, "dx": 0.1, "dy": 0.0}}
    )
    run = trained.runs["masked"]
    result = predict_photos(calibrated, [face], source=run.run_id, detector=lambda p: [found],
                            out=tmp_path / "out")  # fmt: skip
    (photo,) = result.photos
    np.testing.assert_allclose(photo.framed.box, crop, atol=1e-9)
    np.testing.assert_allclose(photo.points, run.test[0] + at, atol=1e-3)
    given = predict_photos(calibrated, [face], source=run.run_id, box=crop, out=tmp_path / "b")
    np.testing.assert_allclose(given.photos[0].framed.box, crop, atol=1e-9)


@pytest.mark.shared
def test_opencv_finds_the_face_of_a_real_photo(shared_data: Path) -> None:
    pytest.importorskip("cv2")
    folder = shared_data / "ibug-68-proxy"
    face = xml_faces(folder / TEST_XML)[0]
    photo = np.asarray(Image.open(folder / face["file"]).convert("RGB"))
    boxes = HaarDetector()(photo)
    assert boxes, "no face found"
    x, y, w, h = max(boxes, key=lambda b: b[2] * b[3])
    left, top, width, height = face["box"]
    centre = np.array([x + w / 2, y + h / 2])
    assert np.abs(centre - [left + width / 2, top + height / 2]).max() < 0.3 * width
    assert 0.6 < w / width < 1.6
    assert HaarDetector()(np.full((120, 160, 3), 90, np.uint8)) == []


# ------------------------------------------------------------------------- plug-ins


def test_a_whole_photo_competition_needs_no_box_nor_detector(
    trained: Trained, tiny: Competition, test_split: KeypointData, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A plug-in whose network sees the whole photo: the photo resized to input_size."""
    monkeypatch.setitem(sys.modules, "cv2", None)

    def whole(image: np.ndarray, comp: Competition, box) -> tuple[np.ndarray, np.ndarray]:
        assert box is None
        height, width = image.shape[:2]
        size = comp.input_size
        gray = Image.fromarray(image).convert("L").resize((size, size), Image.Resampling.BILINEAR)
        sx, sy = width / size, height / size
        return np.asarray(gray), np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])

    monkeypatch.setattr(tiny.plugin, "photo_needs_face", lambda comp: False)
    monkeypatch.setattr(tiny.plugin, "photo_input", whole)
    photo = save(tmp_path / "whole.png", rgb(test_split.images[3]))
    run = trained.runs["8-30"]
    result = predict_photos(tiny, [photo], source=run.run_id, out=tmp_path / "out")
    (done,) = result.photos
    assert done.framed.box is None and done.framed.box_from == "none"
    np.testing.assert_array_equal(done.framed.input, test_split.images[3])
    np.testing.assert_allclose(done.points, run.test[3], atol=1e-3)
    frame = pd.read_csv(result.csv)
    assert frame[["box_x", "box_y", "box_w", "box_h"]].isna().all().all()


def test_the_bundled_plugins_frame_photos() -> None:
    for name in ("facial-keypoints", "ibug-68"):
        plugin = load_competition(name).plugin
        assert isinstance(plugin, PhotoPlugin), name
        assert plugin.photo_needs_face(load_competition(name))


def test_a_plugin_without_photo_functions_is_one_line(
    tiny: Competition, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(tiny.plugin, "photo_input")
    with pytest.raises(KitError, match="cannot frame a photo"):
        predict_photos(tiny, [tmp_path / "x.png"], box=(0, 0, 10, 10))


def test_ibug_frames_a_photo_as_its_loader_frames_the_test_face(tmp_path: Path) -> None:
    comp = load_competition("ibug-68")
    raw = comp.plugin.write_example(tmp_path / "raw", comp, n_train=2, n_test=3, seed=2)
    _, test = comp.plugin.load(raw, comp)
    for row, face in enumerate(xml_faces(raw / TEST_XML)):
        photo = np.asarray(Image.open(raw / face["file"]).convert("RGB"))
        image, to_original = comp.plugin.photo_input(photo, comp, tuple(face["box"]))
        np.testing.assert_array_equal(image, test.images[row])
        np.testing.assert_allclose(to_original, test.to_original[row], rtol=1e-6)
