"""imm-58: the .asf reader, the keypoint names and flip pairs, the photo framing, loading a
folder and the submission layouts. Data comes from the plug-in's synthetic example and literal
.asf texts; the tests over ../shared/data/imm-58-proxy skip when it is absent."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_ibug_e2e import REPO, _code_strings

from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData
from kit.data.synthetic import MEAN_SHAPE_68, render_face
from kit.errors import DataError
from kit.training.augment import AugmentConfig, augment_batch
from kit.training.predict import unflip

SHARED = REPO.parent / "shared" / "data" / "imm-58-proxy"
# The mean IMM training shape (192 faces of ../shared, measured once): origin at the outer eye
# corners' midpoint, unit outer-eye-corner distance, IMM's point order.
# fmt: off
MEAN_SHAPE_58 = np.array([
    [-0.761, 0.537], [-0.709, 0.729], [-0.624, 0.918], [-0.502, 1.08], [-0.358, 1.214],
    [-0.183, 1.315], [0.025, 1.345], [0.229, 1.302], [0.389, 1.19], [0.52, 1.05],
    [0.635, 0.891], [0.713, 0.715], [0.76, 0.518], [0.499, -0.007], [0.435, -0.057],
    [0.346, -0.083], [0.26, -0.06], [0.19, -0.002], [0.264, 0.027], [0.352, 0.04],
    [0.431, 0.031], [-0.499, 0.007], [-0.437, -0.045], [-0.352, -0.071], [-0.268, -0.048],
    [-0.194, 0.011], [-0.271, 0.04], [-0.356, 0.051], [-0.432, 0.043], [0.151, -0.18],
    [0.267, -0.256], [0.431, -0.276], [0.537, -0.235], [0.614, -0.127], [-0.16, -0.173],
    [-0.281, -0.248], [-0.454, -0.266], [-0.559, -0.223], [-0.628, -0.11], [-0.295, 0.76],
    [-0.072, 0.668], [0.012, 0.691], [0.091, 0.663], [0.323, 0.741], [0.142, 0.869],
    [0.026, 0.886], [-0.094, 0.876], [-0.089, 0.017], [-0.115, 0.25], [-0.197, 0.334],
    [-0.202, 0.453], [-0.107, 0.491], [0.01, 0.518], [0.116, 0.489], [0.208, 0.452],
    [0.211, 0.332], [0.137, 0.257], [0.102, 0.019],
])
# fmt: on
GROUPS = {
    "jaw": range(0, 13),
    "eyes": range(13, 29),
    "brows": range(29, 39),
    "mouth": range(39, 47),
    "nose": range(47, 58),
}  # fmt: skip

# The head and two point lines of IMM's 01-1m.asf, byte for byte (tabs after each field).
ASF_HEAD = """######################################################################
#
#    AAM Shape File  -  written: Wednesday March 07 - 2001 [11:00]
#
######################################################################

#
# number of model points
#
{count}

#
# model points
#
# format: <path#> <type> <x rel.> <y rel.> <point#> <connects from> <connects to>
#
"""


@pytest.fixture
def comp() -> Competition:
    return load_competition("imm-58")


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    comp = load_competition("imm-58")
    return comp.plugin.write_example(tmp_path_factory.mktemp("imm") / "raw", comp, 13, 5, seed=3)


def asf_text(points: np.ndarray, host: str = "01-1m.jpg", user_fields: bool = False) -> str:
    """An .asf text written by the test itself (IMM's layout), for (58, 2) relative points."""
    paths = np.repeat(np.arange(7), [13, 8, 8, 5, 5, 8, 11])
    extra = "\t0.00\t0.00\t0.00" if user_fields else ""
    rows = [
        f"{p} \t4 \t{x:.8f} \t{y:.8f} \t{k} \t{max(k - 1, 0)} \t{k + 1}{extra}"
        for k, (p, (x, y)) in enumerate(zip(paths, points, strict=True))
    ]
    return (
        ASF_HEAD.format(count=len(points)) + "\n".join(rows) + f"\n\n#\n# host image\n#\n{host}\n"
    )


def relative_mean_shape() -> np.ndarray:
    return MEAN_SHAPE_58 * 0.15 + np.array([0.5, 0.45])


# ------------------------------------------------------------------------- the .asf reader


def test_asf_reader_reads_both_variants_and_the_host_image(comp: Competition, tmp_path) -> None:
    points = relative_mean_shape()
    for user_fields in (False, True):
        path = tmp_path / f"x{user_fields}.asf"
        path.write_text(asf_text(points, "07-3f.jpg", user_fields), encoding="latin-1")
        shape = comp.plugin.asf.read_asf(path)
        np.testing.assert_allclose(shape.relative, points, atol=1e-8)
        assert shape.host_image == "07-3f.jpg"
        assert list(shape.paths[[0, 12, 13, 21, 29, 34, 39, 47, 57]]) == [0, 0, 1, 2, 3, 4, 5, 6, 6]


def test_asf_writer_round_trips(comp: Competition, tmp_path) -> None:
    asf = comp.plugin.asf
    path = tmp_path / "a.asf"
    path.write_text(asf_text(relative_mean_shape()))
    shape = asf.read_asf(path)
    again = tmp_path / "b.asf"
    again.write_text(asf.format_asf(shape))
    copy = asf.read_asf(again)
    np.testing.assert_allclose(copy.relative, shape.relative, atol=1e-8)
    assert (copy.paths == shape.paths).all() and (copy.links == shape.links).all()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("\n58\n", "\n57\n"), "57 points, expected 58"),
        (lambda t: t.replace("0.35000000", "224.00000000", 1), "not relative to the image"),
        (lambda t: re.sub(r"\t5 \t4 \t6", "\t9 \t4 \t6", t), "point number 9, expected 5"),
        (lambda t: t.replace("\t0.62000000", "\tabc", 1), "y 'abc' is not a finite number"),
        (lambda t: t.rsplit("\n", 2)[0] + "\n", "expected one host image line"),
        (lambda t: t.replace(" \t4 \t", " \t", 1), "expected 7 fields"),
    ],
)
def test_asf_reader_names_the_file_and_line_of_each_problem(
    comp: Competition, tmp_path, edit, message
) -> None:
    points = relative_mean_shape()
    points[0] = [0.35, 0.62]
    path = tmp_path / "bad.asf"
    path.write_text(edit(asf_text(points)))
    with pytest.raises(DataError, match=re.escape(message)) as caught:
        comp.plugin.asf.read_asf(path, "imm_face_db/bad.asf")
    assert "imm_face_db/bad.asf" in str(caught.value) and "\n" not in str(caught.value)


# ------------------------------------------------------------------------- names and flips


def test_keypoint_names_follow_the_database(comp: Competition) -> None:
    names = comp.keypoint_names
    assert len(names) == 58 and comp.kaggle_slug == "" and comp.metric == "mae"
    assert names[52] == "nose_tip" and comp.subset_indices("nose_tip") == [52]
    assert [names.index(n) for n in comp.options["nme_points"]] == [13, 21]
    for group, rows in GROUPS.items():
        assert comp.subset_indices(group) == list(rows)
    assert comp.submit_subsets == ("nose_tip",)
    assert all(n.startswith("left_") for n in names[13:21]) and names[13] == "left_eye_outer"
    assert MEAN_SHAPE_58[13, 0] > 0 > MEAN_SHAPE_58[21, 0]  # the subject's left: image right


def _mirror(shape: np.ndarray, permutation: list[int]) -> np.ndarray:
    """Flip a (K, 2) shape about its centroid's vertical axis and swap left/right names."""
    flipped = shape[permutation].copy()
    flipped[:, 0] = 2 * shape[:, 0].mean() - flipped[:, 0]
    return flipped


def test_flip_pairs_mirror_the_mean_imm_shape(comp: Competition) -> None:
    """The mean IMM shape mirrored with the pairs is itself; dropping any one pair breaks it."""
    perm = comp.flip_permutation()
    assert [perm[i] for i in perm] == list(range(58))
    assert [i for i in range(58) if perm[i] == i] == [6, 41, 45, 52]
    assert np.linalg.norm(_mirror(MEAN_SHAPE_58, perm) - MEAN_SHAPE_58, axis=1).max() < 0.05
    for a, b in comp.flip_pairs:
        broken = list(perm)
        broken[a], broken[b] = a, b
        assert np.linalg.norm(_mirror(MEAN_SHAPE_58, broken) - MEAN_SHAPE_58, axis=1).max() > 0.1


def test_flipping_a_face_twice_is_the_identity(comp: Competition) -> None:
    size = 64
    perm = torch.tensor(comp.flip_permutation())
    points68 = MEAN_SHAPE_68 * 20 + np.array([31.5, 28.0], np.float32)  # symmetric about 31.5
    points = comp.plugin.points_from_68(points68[None].astype(np.float64))[0].astype(np.float32)
    image = render_face(points68, size, np.random.default_rng(0))
    images = torch.from_numpy(image).float()[None, None] / 255
    keypoints = torch.from_numpy(points)[None]
    cfg = AugmentConfig(flip=1.0)
    once_images, once = augment_batch(images, keypoints, perm, cfg)
    twice_images, twice = augment_batch(once_images, once, perm, cfg)
    assert torch.allclose(once[0], keypoints[0], atol=0.6)  # the mirrored mean shape is itself
    assert torch.allclose(twice, keypoints, atol=1e-4)
    assert torch.allclose(twice_images, images, atol=1e-5)
    assert torch.allclose(unflip(unflip(keypoints, perm, size), perm, size), keypoints)


def test_kit_names_no_imm_fact() -> None:
    """Competition facts live in competitions/imm-58; no code string in kit/ repeats them."""
    comp = load_competition("imm-58")
    facts = {comp.name, *comp.keypoint_names, *comp.subsets, comp.options["train_folder"]}
    facts -= {"nose_tip", "jaw", "eyes", "brows", "mouth", "nose"}  # FKD's and common words
    found = {
        (path.relative_to(REPO).as_posix(), text)
        for path in sorted((REPO / "kit").rglob("*.py"))
        for text in _code_strings(path)
        if text in facts or re.search(r"\bimm\b|\.asf\b", text.lower())
    }
    assert found == set()


# ------------------------------------------------------------------------- framing


@pytest.mark.parametrize("framing", ["crop", "pad"])
def test_framing_maps_a_photo_pixel_to_its_input_pixel_and_back(
    comp: Competition, framing: str
) -> None:
    """A bright 3x3 dot at a known photo pixel lands where this test's own formula says."""
    width, height, size = 320, 240, 64
    side = min(width, height) if framing == "crop" else max(width, height)
    x0, y0 = (width - side) / 2, (height - side) / 2
    photo = np.zeros((height, width), np.uint8)
    dot = np.array([170.0, 100.0])
    photo[99:102, 169:172] = 255
    transform = comp.plugin.frame_transform(width, height, size, framing)
    framed = comp.plugin.frame_pixels(photo, transform, size)
    expected = (dot - [x0, y0] + 0.5) * size / side - 0.5
    ys, xs = np.nonzero(framed > 0)
    weights = framed[ys, xs].astype(np.float64)
    centre = np.array([np.average(xs, weights=weights), np.average(ys, weights=weights)])
    assert np.abs(centre - expected).max() < 0.35
    data = KeypointData.whole_images(framed[None], expected[None, None], np.array(["p"]))
    data.to_original = transform[None].astype(np.float32)
    np.testing.assert_allclose(data.to_original_coords(expected[None, None])[0, 0], dot, atol=1e-3)
    back = comp.plugin.to_input(dot[None, None], transform[None])[0, 0]
    np.testing.assert_allclose(back, expected, atol=1e-9)


def test_pad_framing_repeats_the_edge_and_keeps_every_column(comp: Competition) -> None:
    photo = np.tile(np.linspace(0, 255, 320).astype(np.uint8), (240, 1))
    photo[0, :] = 200  # the top row repeats into the pad above
    transform = comp.plugin.frame_transform(320, 240, 64, "pad")
    framed = comp.plugin.frame_pixels(photo, transform, 64)
    assert framed[0, 32] == 200 and framed[2, 32] == 200
    assert framed[32, 0] < 5 and framed[32, -1] > 250


def test_photo_input_is_the_loaded_frame(comp: Competition, example: Path) -> None:
    """kit predict's framing of a photo is exactly the training cache's."""
    train, _ = comp.plugin.load(example, comp)
    rgb = np.asarray(Image.open(example / "imm_face_db" / train.ids[0]).convert("RGB"))
    image, transform = comp.plugin.photo_input(rgb, comp, None)
    assert comp.plugin.photo_needs_face(comp) is False
    np.testing.assert_array_equal(image, train.images[0])
    np.testing.assert_allclose(transform, train.to_original[0], atol=1e-5)


# ------------------------------------------------------------------------- a folder


def _asf_pixels(path: Path, width: int, height: int) -> np.ndarray:
    """The test's own .asf reading: x_rel * w, y_rel * h of the 58 point lines."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    points = [ln for ln in lines if len(ln) in (7, 10) and not ln[0].startswith("#")]
    return np.array([[float(p[2]) * width, float(p[3]) * height] for p in points])


def test_load_reads_people_photos_and_landmarks(comp: Competition, example: Path) -> None:
    train, test = comp.plugin.load(example, comp)
    assert len(train) == 13 and len(test) == 5
    assert train.ids[0] == "01-1m.jpg" and train.ids[12] == "03-1m.jpg"
    assert list(test.ids) == [f"test_{k:03d}.jpg" for k in range(5)]
    assert list(train.groups[:7]) == ["person 01"] * 6 + ["person 02"]
    assert train.images.shape == (13, comp.input_size, comp.input_size)
    truth = _asf_pixels(example / "imm_face_db" / "02-4f.asf", 320, 240)
    row = list(train.ids).index("02-4f.jpg")
    back = train.to_original_coords(train.keypoints[row : row + 1].astype(np.float64))[0]
    np.testing.assert_allclose(back, truth, atol=1e-3)
    assert np.isnan(test.keypoints).all()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda raw: (raw / "imm_face_db" / "01-2m.asf").unlink(), "'01-2m.jpg' has no .asf"),
        (lambda raw: (raw / "imm_face_db" / "01-2m.jpg").unlink(), "host image '01-2m.jpg'"),
        (lambda raw: [p.unlink() for p in (raw / "test").iterdir()], "holds no photo"),
        (lambda raw: (raw / "test" / "test_001.jpg").write_bytes(b"no jpeg"), "test_001.jpg"),
    ],
)
def test_a_damaged_folder_gets_one_line_naming_the_file(
    comp: Competition, tmp_path, damage, message
) -> None:
    raw = comp.plugin.write_example(tmp_path / "raw", comp, 7, 2, seed=1)
    damage(raw)
    with pytest.raises(DataError, match=re.escape(message)) as caught:
        comp.plugin.load(raw, comp)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------- submissions


def _predictions(comp: Competition, test: KeypointData, columns: list[int]) -> np.ndarray:
    rng = np.random.default_rng(0)
    out = np.full((len(test), comp.num_keypoints, 2), np.nan)
    out[:, columns] = rng.uniform(0, comp.input_size, (len(test), len(columns), 2))
    return out


def test_full_submission_ids_and_photo_pixels(comp: Competition, example: Path, tmp_path) -> None:
    _, test = comp.plugin.load(example, comp)
    pred = _predictions(comp, test, list(range(58)))
    info = comp.plugin.write_submission(tmp_path / "s.csv", comp, example, test, pred)
    frame = pd.read_csv(tmp_path / "s.csv")
    assert info == {"rows": 5 * 116, "images": 5, "keypoints": 58}
    assert list(frame.columns) == ["Id", "Predicted"] and list(frame.Id) == list(range(580))
    # Id = i * 116 + j, j over x0, y0, x1, ...: photo 3's point 52 y, mapped by the test itself
    side, x0 = 240, 40  # the crop of a 320x240 photo
    y = (pred[3, 52, 1] + 0.5) * side / comp.input_size - 0.5
    x = (pred[3, 52, 0] + 0.5) * side / comp.input_size - 0.5 + x0
    assert frame.Predicted[3 * 116 + 2 * 52 + 1] == pytest.approx(y, abs=1e-3)
    assert frame.Predicted[3 * 116 + 2 * 52] == pytest.approx(x, abs=1e-3)


def test_nose_tip_submission_has_two_values_per_photo(
    comp: Competition, example: Path, tmp_path
) -> None:
    _, test = comp.plugin.load(example, comp)
    pred = _predictions(comp, test, [52])
    info = comp.plugin.write_submission(tmp_path / "n.csv", comp, example, test, pred)
    frame = pd.read_csv(tmp_path / "n.csv")
    assert info["rows"] == 10 and info["keypoints"] == 1 and list(frame.Id) == list(range(10))
    photo_pixels = test.to_original_coords(pred)[:, 52].ravel()
    np.testing.assert_allclose(frame.Predicted, photo_pixels, atol=1e-3)


def test_a_partial_prediction_that_is_no_declared_subset_is_refused(
    comp: Competition, example: Path, tmp_path
) -> None:
    _, test = comp.plugin.load(example, comp)
    pred = _predictions(comp, test, comp.subset_indices("eyes"))
    with pytest.raises(DataError, match="no prediction for keypoint jaw_right_0"):
        comp.plugin.write_submission(tmp_path / "e.csv", comp, example, test, pred)
    assert not (tmp_path / "e.csv").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.assign(Predicted=f.Predicted.astype(object).where(f.Id != 3, "abc")),
         "Id 3: Predicted 'abc' is not a number"),
        (lambda f: f.assign(Id=f.Id.where(f.Id != 4, 9)), "row 5 has Id 9, expected 4"),
        (lambda f: f.iloc[:-1], "has 9 rows, expected 10 (5 photos x 2 values)"),
        (lambda f: f.rename(columns={"Predicted": "Value"}), "header is Id,Value"),
    ],
)  # fmt: skip
def test_a_bad_submission_frame_gets_one_line_naming_the_file(
    comp: Competition, example: Path, tmp_path, edit, message
) -> None:
    _, test = comp.plugin.load(example, comp)
    pred = _predictions(comp, test, [52])
    comp.plugin.write_submission(tmp_path / "n.csv", comp, example, test, pred)
    frame = edit(pd.read_csv(tmp_path / "n.csv"))
    with pytest.raises(DataError, match=re.escape(message)) as caught:
        comp.plugin.check_submission_frame(frame, comp, len(test), example, [52], "n.csv")
    assert str(caught.value).startswith("n.csv: ") and "\n" not in str(caught.value)


# ------------------------------------------------------------------------- the real files


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/imm-58-proxy is absent")
def test_the_real_database_loads_and_its_mean_shape_is_symmetric(comp: Competition) -> None:
    train, test = comp.plugin.load(SHARED, comp)
    assert (len(train), len(test)) == (192, 48) and len(set(train.groups)) == 32
    pixels = train.to_original_coords(train.keypoints.astype(np.float64))
    assert pixels[..., 0].min() > 0 and pixels[..., 0].max() < 640 and pixels[..., 1].max() < 480
    mid = (pixels[:, 13] + pixels[:, 21]) / 2
    scale = np.linalg.norm(pixels[:, 13] - pixels[:, 21], axis=1)
    mean = ((pixels - mid[:, None]) / scale[:, None, None]).mean(axis=0)
    np.testing.assert_allclose(mean, MEAN_SHAPE_58, atol=6e-4)
    mean_shape_mae = np.abs(pixels - pixels.mean(axis=0)).mean()
    assert 15 < mean_shape_mae < 30  # the README: about 26 px on the test set
    sample = pd.read_csv(SHARED / "sample_submission.csv")
    assert len(sample) == len(test) * 116
