"""The ibug-68 plug-in: dlib XML and .pts readers, face-box crops, verification, fetch."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData
from kit.errors import DataError

TRAIN_XML = "labels_ibug_300W_train.xml"
TEST_XML = "labels_ibug_300W_test_parsed.xml"


@pytest.fixture(scope="module")
def comp() -> Competition:
    return load_competition("ibug-68")


@pytest.fixture(scope="module")
def plugin(comp: Competition):
    return comp.plugin


@pytest.fixture(scope="module")
def example_master(tmp_path_factory: pytest.TempPathFactory, comp: Competition) -> Path:
    return comp.plugin.write_example(tmp_path_factory.mktemp("ibug") / "example", comp)


@pytest.fixture
def example(example_master: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic competition, free to break."""
    return Path(shutil.copytree(example_master, tmp_path / "example"))


@pytest.fixture(scope="module")
def example_loaded(example_master: Path, plugin, comp) -> tuple[KeypointData, KeypointData]:
    return plugin.load(example_master, comp)


def xml_faces(path: Path) -> list[dict]:
    """An independent reading of a dlib XML: file, box and (68, 2) parts per box, file order."""
    faces = []
    for image in ET.parse(path).getroot().iter("image"):
        for box in image.iter("box"):
            parts = sorted(box.iter("part"), key=lambda p: int(p.get("name")))
            faces.append(
                {
                    "file": image.get("file"),
                    "size": (image.get("width"), image.get("height")),
                    "box": [float(box.get(k)) for k in ("left", "top", "width", "height")],
                    "points": np.array([[float(p.get("x")), float(p.get("y"))] for p in parts]),
                }
            )
    return faces


def gaussian_dot(width: int, height: int, x: float, y: float, sigma: float) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(width), np.arange(height))
    dot = 255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return np.round(dot).astype(np.uint8)


def centroid(image: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(argmax (x, y), intensity centroid (x, y) in a window around it)."""
    peak_y, peak_x = np.unravel_index(np.argmax(image), image.shape)
    ys, xs = np.mgrid[
        max(peak_y - radius, 0) : peak_y + radius + 1, max(peak_x - radius, 0) : peak_x + radius + 1
    ]
    weights = image[ys, xs].astype(np.float64)
    return np.array([peak_x, peak_y]), np.array(
        [
            (weights * xs).sum() / weights.sum(),
            (weights * ys).sum() / weights.sum(),
        ]
    )


def replace_in(path: Path, pattern: str, new: str, count: int = 1) -> None:
    text = path.read_text(encoding="latin-1")
    changed = re.sub(pattern, new, text, count=count)
    assert changed != text, f"pattern {pattern!r} not found in {path.name}"
    path.write_text(changed, encoding="latin-1")


# --- write_example -> load --------------------------------------------------------------------


def test_example_loads_with_counts_shapes_ids_and_groups(example_master, example_loaded, comp):
    train, test = example_loaded
    assert (len(train), len(test)) == (24, 8)
    assert train.images.shape == (24, 128, 128) and train.images.dtype == np.uint8
    assert test.images.shape == (8, 128, 128)
    assert train.keypoints.shape == (24, 68, 2) and train.complete.all()
    assert np.isnan(test.keypoints).all()
    assert train.to_original.shape == (24, 2, 3) and train.to_original.dtype == np.float32
    truth = xml_faces(example_master / TRAIN_XML)
    assert list(train.ids) == [f["file"] for f in truth]
    assert list(test.ids) == [f["file"] for f in xml_faces(example_master / TEST_XML)]
    pairs = [i for i in train.ids if i.startswith("afw/")]
    assert pairs and len(pairs) % 2 == 0  # AFW photos written once per face
    for first in (i for i in pairs if i.endswith("_1.jpg")):
        second = first.replace("_1.jpg", "_2.jpg")
        group = train.groups[list(train.ids).index(first)]
        assert group == train.groups[list(train.ids).index(second)] == first[: -len("_1.jpg")]
    assert len(set(train.groups)) == len(train) - len(pairs) // 2
    lfpw = [g for g in train.groups if g.startswith("lfpw/")]
    assert lfpw and len(set(lfpw)) == len(lfpw)  # image_0002 is not the suffix "_2"


def test_example_keypoints_map_back_to_xml_coordinates(example_master, example_loaded):
    train, _ = example_loaded
    truth = np.stack([f["points"] for f in xml_faces(example_master / TRAIN_XML)])
    back = train.to_original_coords(train.keypoints.astype(np.float64))
    assert np.abs(back - truth).max() < 0.01
    assert (train.keypoints > -1).all() and (train.keypoints < 128).all()  # margin holds the face


def test_example_crops_show_the_labelled_face(example_loaded):
    """Images and labels agree: the drawn pupils (dark) sit at the eye landmarks, not skin."""
    train, _ = example_loaded
    for image, points in zip(train.images.astype(int), train.keypoints, strict=True):
        pupils = [np.round(points[a : a + 6].mean(0)).astype(int) for a in (36, 42)]
        cheek = np.round((points[36:42].mean(0) + points[3]) / 2).astype(int)
        skin = image[cheek[1], cheek[0]]
        assert all(image[y, x] < skin - 40 for x, y in pupils)


def test_example_has_boxes_partly_outside_the_image(example_master, example_loaded):
    train, test = example_loaded
    for name, split in ((TRAIN_XML, train), (TEST_XML, test)):
        boxes = np.array([f["box"] for f in xml_faces(example_master / name)])
        outside = np.flatnonzero(boxes[:, 0] < 0)
        assert len(outside) >= 1
        assert (split.to_original[outside, 0, 2] < 0).all()  # the crop starts left of the image


# --- crop geometry ----------------------------------------------------------------------------


def test_crop_transform_follows_the_documented_formula(plugin):
    box = plugin.Box(10.0, 20.0, 100.0, 80.0)
    to_original = plugin.crop_transform(box, margin=0.25, size=100)
    side = 150.0
    x0, y0 = 10 + 50 - side / 2, 20 + 40 - side / 2
    s = 100 / side
    point = np.array([[[37.25, 81.5]]])
    expected = (point - [x0, y0] + 0.5) * s - 0.5
    assert np.allclose(plugin.to_input(point, to_original[None]), expected, atol=1e-9)
    centre = np.array([[[10 + 49.5, 20 + 39.5]]])  # the box's centre pixel -> the crop's centre
    assert np.allclose(plugin.to_input(centre, to_original[None]), 49.5, atol=1e-9)


def test_points_survive_the_round_trip(plugin):
    rng = np.random.default_rng(1)
    n = 50
    boxes = [
        plugin.Box(*rng.uniform(-50, 400, 2), *np.full(2, rng.uniform(20, 400))) for _ in range(n)
    ]
    transforms = np.stack([plugin.crop_transform(b, 0.25, 128) for b in boxes]).astype(np.float32)
    original = rng.uniform(-50, 800, (n, 68, 2))
    data = KeypointData(
        images=np.zeros((n, 1, 1), np.uint8),
        keypoints=plugin.to_input(original, transforms).astype(np.float32),
        ids=np.arange(n),
        groups=np.arange(n).astype(str),
        to_original=transforms,
    )
    assert np.abs(data.to_original_coords(data.keypoints) - original).max() < 0.01


@pytest.mark.parametrize(
    ("box", "sigma"),
    [
        ((40, 30, 300, 300), 2.0),  # downscale by 3.5
        ((140, 100, 30, 30), 0.8),  # upscale by 2.8
        ((-40, -30, 250, 250), 1.5),  # box partly outside the image, padded
    ],
)
@pytest.mark.parametrize("pad", ["edge", "constant"])
def test_bright_dot_lands_at_the_mapped_point(plugin, box, sigma, pad):
    dot = np.array([152.3, 117.8])
    image = gaussian_dot(420, 380, *dot, sigma)
    to_original = plugin.crop_transform(plugin.Box(*map(float, box)), 0.25, 128)
    crop = plugin.crop_face(image, to_original.astype(np.float32), 128, pad)
    assert crop.shape == (128, 128) and crop.dtype == np.uint8
    mapped = plugin.to_input(dot[None, None], to_original[None])[0, 0]
    peak, middle = centroid(crop, radius=max(3, int(4 * sigma * 128 / box[2] * 1.5) + 3))
    assert np.abs(peak - mapped).max() <= 0.51  # the brightest pixel is the nearest one
    assert np.abs(middle - mapped).max() < 0.03  # and the blob is centred on the point


def test_box_partly_outside_is_padded(plugin):
    height, width = 80, 100
    gradient = np.tile(np.linspace(50, 250, width).round().astype(np.uint8), (height, 1))
    to_original = plugin.crop_transform(plugin.Box(-30.0, -10.0, 60.0, 60.0), 0.25, 90)
    columns_x = to_original[0, 0] * np.arange(90) + to_original[0, 2]  # original x per column
    outside = columns_x < -1.5  # clear of the bilinear footprint of column 0
    inside = columns_x > 1.5
    edge = plugin.crop_face(gradient, to_original, 90, "edge").astype(int)
    constant = plugin.crop_face(gradient, to_original, 90, "constant").astype(int)
    assert outside.sum() > 20
    assert (edge[45, outside] == 50).all() and (constant[45, outside] == 0).all()
    truth = np.interp(columns_x[inside], np.arange(width), gradient[0].astype(float))
    assert np.abs(edge[45, inside] - truth).max() <= 1
    assert np.array_equal(edge[45, inside], constant[45, inside])


# --- .pts -------------------------------------------------------------------------------------


def test_generated_pts_files_in_both_variants_match_the_xml(example_master, plugin):
    truth = {f["file"]: f["points"] for f in xml_faces(example_master / TRAIN_XML)}
    pts_files = sorted(example_master.rglob("*.pts"))
    texts = [p.read_text() for p in pts_files]
    assert sum(t.startswith("version: 1") for t in texts) >= 1
    assert sum(not t.startswith("version") for t in texts) >= 1
    assert any(not t.endswith("\n") for t in texts)  # the header variant, like 300-W's own
    for pts in pts_files:
        image = next(f for f in truth if Path(f).stem == pts.stem)
        assert np.abs(plugin.read_pts(pts) - truth[image]).max() < 1e-5  # 1-based -> 0-based


def test_pts_reader_conversions_and_errors(tmp_path, plugin):
    rows = [f"{k + 1}.5 {2 * k + 1}" for k in range(68)]
    bare, header = tmp_path / "bare.pts", tmp_path / "header.pts"
    bare.write_text("\n".join(rows) + "\n\n")
    header.write_text("version: 1\nn_points:  68\n{\n" + "\n".join(rows) + "\n}")
    expected = np.stack([np.arange(68) + 0.5, 2.0 * np.arange(68)], 1)
    assert np.array_equal(plugin.read_pts(bare), expected)
    assert np.array_equal(plugin.read_pts(header), expected)
    cases = {
        "short.pts": ("\n".join(rows[:67]), "has 67 points, expected 68"),
        "lying.pts": ("version: 1\nn_points: 67\n{\n" + "\n".join(rows) + "\n}", "n_points 67"),
        "word.pts": ("\n".join([*rows[:9], "12.0 abc", *rows[10:]]), "line 10"),
        "open.pts": ("version: 1\nn_points: 68\n{\n" + "\n".join(rows), "'{'"),
    }
    for name, (text, problem) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError) as err:
            plugin.read_pts(tmp_path / name, name)
        assert str(err.value).startswith(f"{name}: ") and problem in str(err.value)


def test_shared_raw_pts_examples(shared_data, plugin, comp):
    root = shared_data / "ibug-68-proxy"
    examples = pd.read_csv(root / "raw-pts-examples" / "examples.csv")
    proxy = {f["file"]: f["points"] for f in xml_faces(root / TRAIN_XML)}
    assert set(examples["variant"].str.split().str[0]) == {"bare", "header"}
    for row in examples.itertuples():
        points = plugin.read_pts(root / "raw-pts-examples" / row.pts_file)
        assert points.shape == (68, 2)
        if pd.isna(row.proxy_file):
            continue
        shift = np.array([row.crop_x0, row.crop_y0])
        in_proxy = (points - shift + 0.5) * [row.sx, row.sy] - 0.5  # the README's relation
        assert np.abs(in_proxy - proxy[row.proxy_file]).max() < 0.0051  # XML has 2 decimals
    # The raw 300-W layout, read in place: labels from .pts, boxes from the landmarks.
    faces = plugin.faces_from_pts(root / "raw-pts-examples")
    assert len(faces) == len(examples)
    base = root / "raw-pts-examples"
    data = plugin.build_split(base, base, faces, comp, labelled=True)
    truth = np.stack([f.points for f in faces])
    assert np.abs(data.to_original_coords(data.keypoints) - truth).max() < 0.01
    margin_px = 0.25 / 1.5 * 128  # the margin, in input pixels, around the landmarks' extent
    assert data.keypoints.min() > margin_px - 2 and data.keypoints.max() < 127 - margin_px + 2


def test_train_labels_from_pts_when_the_xml_is_absent(example, plugin, comp):
    (example / TRAIN_XML).unlink()
    test_image = xml_faces(example / TEST_XML)[0]["file"]
    shutil.copy(next(example.rglob("*.pts")), (example / test_image).with_suffix(".pts"))
    train, test = plugin.load(example, comp)
    pts_files = sorted(p for p in example.rglob("*.pts") if "testset" not in str(p))
    assert len(train) == len(pts_files) == 4 and len(test) == 8  # the test image's .pts ignored
    truth = np.stack([plugin.read_pts((example / i).with_suffix(".pts")) for i in train.ids])
    back = train.to_original_coords(train.keypoints.astype(np.float64))
    assert np.abs(back - truth).max() < 0.01
    for pts in pts_files:
        pts.unlink()
    with pytest.raises(DataError, match=rf"^{TRAIN_XML}: not found, and no image has a \.pts"):
        plugin.load(example, comp)


# --- verification -----------------------------------------------------------------------------


def _break_missing_image(folder: Path) -> tuple[str, str]:
    file = xml_faces(folder / TRAIN_XML)[5]["file"]
    (folder / file).unlink()
    return TRAIN_XML, f"image '{file}' does not exist"


def _break_malformed_xml(folder: Path) -> tuple[str, str]:
    text = (folder / TRAIN_XML).read_text(encoding="latin-1")
    (folder / TRAIN_XML).write_text(text[: len(text) // 2], encoding="latin-1")
    return TRAIN_XML, "XML does not parse: "


def _break_67_parts(folder: Path) -> tuple[str, str]:
    file = xml_faces(folder / TRAIN_XML)[3]["file"]
    text = (folder / TRAIN_XML).read_text(encoding="latin-1")
    start = text.index(f"file='{file}'")
    cut = text.index("<part name='40'", start)
    end = text.index("\n", cut) + 1
    (folder / TRAIN_XML).write_text(text[:cut] + text[end:], encoding="latin-1")
    return TRAIN_XML, f"image '{file}' has 67 parts, expected 68"


def _break_non_numeric(folder: Path) -> tuple[str, str]:
    replace_in(folder / TRAIN_XML, r"(<part name='07' x=')[^']*'", r"\1twelve'")
    file = xml_faces_no_parts(folder / TRAIN_XML)[0]
    return TRAIN_XML, f"image '{file}' part 07: x 'twelve' is not a finite number"


def _break_image(folder: Path) -> tuple[str, str]:
    file = xml_faces(folder / TEST_XML)[2]["file"]
    (folder / file).write_bytes(b"\xff\xd8 not really a jpeg")
    return file, "cannot open image"


def _break_box_size(folder: Path) -> tuple[str, str]:
    replace_in(folder / TEST_XML, r'height="\d+"', 'height="0"')
    return TEST_XML, "box has non-positive size"


def _break_box_far_away(folder: Path) -> tuple[str, str]:
    replace_in(folder / TEST_XML, r'left="\d+"', 'left="9000"')
    return TEST_XML, "its crop misses the"


def _break_stated_size(folder: Path) -> tuple[str, str]:
    replace_in(folder / TRAIN_XML, r"width='(\d+)' height", "width='7' height")
    return TRAIN_XML, "but the XML says 7x"


def _break_67_pts(folder: Path) -> tuple[str, str]:
    (folder / TRAIN_XML).unlink()
    pts = sorted(folder.rglob("*.pts"))[0]
    lines = pts.read_text().splitlines()
    pts.write_text("\n".join(lines[:67]) + "\n")
    return pts.relative_to(folder).as_posix(), "has 67 points, expected 68"


def xml_faces_no_parts(path: Path) -> list[str]:
    return re.findall(r"file='([^']+)'", path.read_text(encoding="latin-1"))


BREAKERS = [
    _break_missing_image,
    _break_malformed_xml,
    _break_67_parts,
    _break_non_numeric,
    _break_image,
    _break_box_size,
    _break_box_far_away,
    _break_stated_size,
    _break_67_pts,
]


@pytest.mark.parametrize("breaker", BREAKERS, ids=lambda f: f.__name__[len("_break_") :])
def test_bad_input_is_one_data_error_naming_the_file(example, plugin, comp, breaker):
    named, problem = breaker(example)
    with pytest.raises(DataError) as err:
        plugin.load(example, comp)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{named}: ") and problem in message
    if breaker is _break_malformed_xml:
        assert re.search(r"line \d+, column \d+", message)  # the parser's position


@pytest.mark.parametrize("breaker", [_break_missing_image, _break_67_parts, _break_67_pts])
def test_cli_fetch_reports_bad_input_in_one_line(example, cli, work_dir, breaker):
    named, problem = breaker(example)
    result = cli("fetch", "ibug-68", "--from", example)
    assert result.code != 0
    lines = [ln for ln in result.messages.splitlines() if ln.strip()]
    assert len(lines) == 1 and named in lines[0] and problem in lines[0]
    assert "Traceback" not in result.err + result.out
    assert not (work_dir / "ibug-68" / "cache" / "train.npz").exists()


def test_cli_fetch_of_the_example(example_master, cli, work_dir):
    result = cli("fetch", "ibug-68", "--from", example_master)
    assert result.code == 0, result.err
    train = KeypointData.load(work_dir / "ibug-68" / "cache" / "train.npz")
    assert len(train) == 24 and train.ids.dtype.kind == "U"


# --- metric helpers ---------------------------------------------------------------------------


def test_nme_normaliser_is_the_outer_eye_corner_distance(plugin, comp):
    points = np.zeros((2, 68, 2))
    points[0, 36], points[0, 45] = [10, 20], [40, 60]
    points[1, 36], points[1, 45] = [5, 5], [5, 17]
    assert np.allclose(plugin.nme_normaliser(points, comp), [50, 12])
    assert np.allclose(plugin.nme_normaliser(points), [50, 12])
    shifted = points + np.array([3.0, 4.0])  # every point 5 px off
    assert np.allclose(plugin.nme(shifted, points, comp), [5 / 50, 5 / 12])


# --- the proxy competition --------------------------------------------------------------------


def mirror(shape: np.ndarray, permutation: list[int]) -> np.ndarray:
    """Flip a (K, 2) shape about its own centroid's vertical axis and swap left/right names."""
    flipped = shape[permutation].copy()
    flipped[:, 0] = 2 * shape[:, 0].mean() - flipped[:, 0]
    return flipped


@pytest.mark.shared
def test_fetch_of_the_proxy(shared_data, cli, work_dir, comp, plugin):
    root = shared_data / "ibug-68-proxy"
    result = cli("fetch", "ibug-68", "--from", root)
    assert result.code == 0, result.err
    cache = work_dir / "ibug-68" / "cache"
    train, test = KeypointData.load(cache / "train.npz"), KeypointData.load(cache / "test.npz")
    assert (len(train), len(test)) == (1207, 330)
    assert train.images.shape == (1207, 128, 128) and train.images.dtype == np.uint8
    assert test.images.shape == (330, 128, 128) and test.images.dtype == np.uint8
    assert train.complete.all() and np.isnan(test.keypoints).all()
    assert len(set(train.groups)) < len(train)
    assert (train.groups == "afw/1130084326").sum() >= 2
    truth = xml_faces(root / TRAIN_XML)
    assert list(train.ids) == [f["file"] for f in truth]
    back = train.to_original_coords(train.keypoints.astype(np.float64))
    assert np.abs(back - np.stack([f["points"] for f in truth])).max() < 0.01
    assert list(test.ids) == [f["file"] for f in xml_faces(root / TEST_XML)]
    assert plugin.nme_normaliser(back, comp).min() > 5

    # Flip pairs: the mirrored mean shape matches the mean shape (measured: mean 0.80 px,
    # max 1.87 px at 128 px); dropping any one pair pushes the max past 8 px.
    mean = train.keypoints.mean(axis=0)
    permutation = comp.flip_permutation()
    errors = np.linalg.norm(mirror(mean, permutation) - mean, axis=1)
    assert errors.mean() < 1.2 and errors.max() < 3.0
    for a, b in comp.flip_pairs:
        broken = list(permutation)
        broken[a], broken[b] = a, b
        assert np.linalg.norm(mirror(mean, broken) - mean, axis=1).max() > 3.0
    assert [permutation[i] for i in permutation] == list(range(68))
    assert np.allclose(mirror(mirror(mean, permutation), permutation), mean, atol=1e-4)
