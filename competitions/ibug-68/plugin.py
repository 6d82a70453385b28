"""iBUG 300-W, 68 landmarks, in the CS194-26 class-competition layout.

Raw files: a dlib XML of training faces (box + 68 parts), a dlib XML of test boxes, the images
they name, and `sample_submission.csv`. Without the training XML (the raw 300-W layout),
training labels come from the `.pts` file beside each image and the box from the landmarks.

Pixel convention, used everywhere here: coordinates are 0-based pixel centres, so pixel k spans
[k - 0.5, k + 0.5]. A face is cropped to the square of side `side = max(w, h) * (1 + 2 * margin)`
centred on its box and resized to S = input_size pixels (scale s = S / side). With the crop's
left edge x0 = left + w / 2 - side / 2 measured in edge units (pixel k spans [k, k + 1], so 0 is
the image's border; a whole-pixel dlib box covers [left, left + w]):

    x_in = (x_orig - x0 + 0.5) * s - 0.5          x_orig = (x_in + 0.5) / s - 0.5 + x0

which is the README's crop formula. `to_original` stores the second map as a (2, 3) affine, and
the pixels are resampled with exactly that map (Pillow's antialiased resize of the crop; both
in kit.data.crops, shared with other plug-ins).
Parts of the crop outside the image are padded (`crop_pad`: "edge" replicate or "constant" 0).
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from kit.competition import sibling_module
from kit.data.arrays import KeypointData
from kit.data.crops import crop_edges, crop_square, luma, open_gray, square_crop, to_input
from kit.data.id_predicted import check_id_predicted
from kit.data.synthetic import render_face, sample_shapes
from kit.errors import DataError, KitError
from kit.metrics import eye_distance, nme_per_face
from kit.workspace import write_bytes, write_text

if TYPE_CHECKING:
    from kit.competition import Competition


formats = sibling_module(__file__, "formats")
Box, Face, read_pts, format_pts = formats.Box, formats.Face, formats.read_pts, formats.format_pts
read_dlib_xml = formats.read_dlib_xml

DEFAULTS: dict[str, Any] = {
    "train_xml": "labels_ibug_300W_train.xml",
    "test_xml": "labels_ibug_300W_test_parsed.xml",
    "sample_submission": "sample_submission.csv",
    "crop_margin": 0.25,
    "crop_pad": "edge",
    "nme_points": ["eye_36", "eye_45"],
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".JPG", ".JPEG", ".PNG")
# Faces of one photo: AFW/HELEN/iBUG files are <photo>_<k>.<ext> with a small k; lfpw's
# zero-padded image_0005 is a photo of its own, hence [1-9].
FACE_SUFFIX = re.compile(r"_[1-9][0-9]?$")
MAX_BOX_TO_IMAGE = 10.0  # a box this many times the image's longer side is a unit mistake


def options(comp: Competition) -> dict[str, Any]:
    """The competition's [options] with defaults, checked."""
    opts = {**DEFAULTS, **comp.options}
    config = comp.root / "competition.toml"
    margin = opts["crop_margin"]
    if not isinstance(margin, int | float) or not 0 <= margin <= 2:
        raise KitError(f"options.crop_margin {margin!r} is not in [0, 2]", path=config)
    if opts["crop_pad"] not in ("edge", "constant"):
        raise KitError(f"options.crop_pad {opts['crop_pad']!r} is not edge|constant", path=config)
    return opts


# --- the plug-in protocol ---------------------------------------------------------------------


def required_files(comp: Competition) -> list[str]:
    """The test XML. Training labels come from the train XML or, where it is absent (the raw
    300-W layout), from .pts files beside the images: either will do, and load() says so."""
    return [options(comp)["test_xml"]]


def load(raw_dir: Path, comp: Competition) -> tuple[KeypointData, KeypointData]:
    """Parse and verify both splits; faces cropped to comp.input_size, keypoints in input pixels."""
    opts = options(comp)
    test_xml, train_xml = raw_dir / opts["test_xml"], raw_dir / opts["train_xml"]
    test_faces = read_dlib_xml(test_xml, opts["test_xml"], with_parts=False)
    if train_xml.is_file():
        train_faces = read_dlib_xml(train_xml, opts["train_xml"], with_parts=True)
        train_base = train_xml.parent
    else:  # the raw 300-W layout; a test image's own .pts must not leak into training
        test_images = {(test_xml.parent / f.file).resolve() for f in test_faces}
        train_faces, train_base = faces_from_pts(raw_dir, exclude=test_images), raw_dir
        if not train_faces:
            raise DataError(
                "not found, and no image has a .pts file beside it",
                path=opts["train_xml"],
                hint="training labels need the dlib XML or 300-W .pts files",
            )
    return (
        build_split(raw_dir, train_base, train_faces, comp, labelled=True),
        build_split(raw_dir, test_xml.parent, test_faces, comp, labelled=False),
    )


def faces_from_pts(raw_dir: Path, exclude: Collection[Path] = ()) -> list[Face]:
    """One training face per image with a .pts beside it; the box is the landmarks' extent."""
    faces = []
    for pts in sorted(raw_dir.rglob("*.pts")):
        shown = pts.relative_to(raw_dir).as_posix()
        image = next((p for s in IMAGE_SUFFIXES if (p := pts.with_suffix(s)).is_file()), None)
        if image is None:
            raise DataError(f"no image beside it ({' '.join(IMAGE_SUFFIXES)})", path=shown)
        if image.resolve() in exclude:
            continue
        points = read_pts(pts, shown)
        file = image.relative_to(raw_dir).as_posix()
        faces.append(Face(file, landmark_box(points), points, None, shown, 0, 1))
    return faces


def landmark_box(points: np.ndarray) -> Box:
    """The smallest whole-pixel dlib box holding every landmark."""
    lo, hi = np.floor(np.nanmin(points, 0)), np.ceil(np.nanmax(points, 0))
    return Box(float(lo[0]), float(lo[1]), float(hi[0] - lo[0] + 1), float(hi[1] - lo[1] + 1))


def photo_group(file: str) -> str:
    """The source photo of a face file: 'afw/1130084326_2.jpg' -> 'afw/1130084326'."""
    folder, _, name = file.replace("\\", "/").rpartition("/")
    stem = FACE_SUFFIX.sub("", name.rsplit(".", 1)[0] if "." in name else name)
    return f"{folder}/{stem}" if folder else stem


def face_id(face: Face) -> str:
    """The file as written in the XML; `file#k` (1-based) where one image holds several boxes."""
    return face.file if face.count == 1 else f"{face.file}#{face.index + 1}"


# --- geometry ---------------------------------------------------------------------------------


def crop_transform(box: Box, margin: float, size: int) -> np.ndarray:
    """(2, 3) affine from input pixels of the square crop around `box` to original pixels."""
    side = max(box.width, box.height) * (1 + 2 * margin)
    x0 = box.left + box.width / 2 - side / 2
    y0 = box.top + box.height / 2 - side / 2
    return square_crop(x0, y0, side, size)


crop_face = crop_square  # a face's pixels through its crop_transform (kit.data.crops)


# --- building a split -------------------------------------------------------------------------


def build_split(
    raw_dir: Path, base: Path, faces: list[Face], comp: Competition, *, labelled: bool
) -> KeypointData:
    """Open every image (in a thread pool), crop its faces, and assemble KeypointData."""
    opts, size = options(comp), comp.input_size
    jobs = _image_jobs(raw_dir, base, faces)
    work = partial(_crop_image, size=size, margin=opts["crop_margin"], pad=opts["crop_pad"])
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = list(pool.map(work, jobs))
    n = len(faces)
    images = np.concatenate([r[0] for r in results]) if n else np.zeros((0, size, size), np.uint8)
    to_original = np.concatenate([r[1] for r in results]) if n else np.zeros((0, 2, 3), np.float32)
    keypoints = np.full((n, len(comp.keypoint_names), 2), np.nan, np.float32)
    if labelled and n:
        original = np.stack([f.points for f in faces])
        keypoints = to_input(original, to_original).astype(np.float32)
    ids = [face_id(f) for f in faces]
    return KeypointData(
        images=images,
        keypoints=keypoints,
        ids=np.array(ids, dtype=str),
        groups=np.array([photo_group(f.file) for f in faces], dtype=str),
        to_original=to_original,
    )


def _image_jobs(raw_dir: Path, base: Path, faces: list[Face]) -> list[tuple[Path, list[Face]]]:
    """Faces grouped by image file (file order kept); every file checked to exist."""
    root = raw_dir.resolve()
    jobs: dict[str, tuple[Path, list[Face]]] = {}
    for face in faces:
        if face.file in jobs and face.index == 0:
            raise DataError(f"image {face.file!r} is listed more than once", path=face.source)
        if face.file not in jobs:
            path = (base / face.file.replace("\\", "/")).resolve()
            if not path.is_relative_to(root):
                raise DataError(f"image {face.file!r} lies outside the folder", path=face.source)
            if not path.is_file():
                raise DataError(f"image {face.file!r} does not exist", path=face.source)
            jobs[face.file] = (path, [])
        jobs[face.file][1].append(face)
    return list(jobs.values())


def _crop_image(
    job: tuple[Path, list[Face]], *, size: int, margin: float, pad: str
) -> tuple[np.ndarray, np.ndarray]:
    path, faces = job
    gray = open_gray(path, faces[0].file)
    height, width = gray.shape
    stated = faces[0].size
    if stated is not None and stated != (width, height):
        raise DataError(
            f"image {faces[0].file!r} is {width}x{height} but the XML says {stated[0]}x{stated[1]}",
            path=faces[0].source,
        )
    transforms = np.stack([crop_transform(f.box, margin, size) for f in faces]).astype(np.float32)
    for face, transform in zip(faces, transforms, strict=True):
        _check_box(face, transform, size, width, height)
    crops = np.stack([crop_face(gray, t, size, pad) for t in transforms])
    return crops, transforms


def _check_box(face: Face, transform: np.ndarray, size: int, width: int, height: int) -> None:
    x0, y0, side = crop_edges(transform, size)
    b = face.box
    where = f"image {face.file!r} box ({b.left:g}, {b.top:g}, {b.width:g}x{b.height:g})"
    if side > MAX_BOX_TO_IMAGE * max(width, height):
        raise DataError(f"{where} is far larger than the {width}x{height} image", path=face.source)
    if x0 + side <= 0 or y0 + side <= 0 or x0 >= width or y0 >= height:
        raise DataError(f"{where}: its crop misses the {width}x{height} image", path=face.source)


# --- a user's photo (kit predict) ------------------------------------------------------------


def photo_needs_face(comp: Competition) -> bool:
    """The network sees a face crop: a photo needs a face box (--box, or a detector's)."""
    return True


def photo_input(
    image: np.ndarray, comp: Competition, box: tuple[float, float, float, float] | None
) -> tuple[np.ndarray, np.ndarray]:
    """A photo's face as the training faces were cut: `box` (x, y, w, h, taken as a dlib
    box) enlarged by crop_margin, squared, resized to input_size (`crop_transform`); the
    pixels as `open_gray` reads an image (Pillow's luma). (crop, its to_original affine)."""
    if box is None:
        raise KitError(f"{comp.name} needs a face box for a photo")
    opts = options(comp)
    size = comp.input_size
    transform = crop_transform(Box(*map(float, box)), opts["crop_margin"], size)
    transform = transform.astype(np.float32)  # as build_split crops the training faces
    return crop_face(luma(image), transform, size, opts["crop_pad"]), transform


# --- metric helpers ---------------------------------------------------------------------------


def nme_indices(comp: Competition | None = None) -> tuple[int, int]:
    """Indices of the two normalising points (options.nme_points; outer eye corners 36, 45)."""
    if comp is None:
        return 36, 45
    a, b = options(comp)["nme_points"]
    return comp.keypoint_names.index(a), comp.keypoint_names.index(b)


def nme_normaliser(points_original: np.ndarray, comp: Competition | None = None) -> np.ndarray:
    """(N,) outer-eye-corner distance of (N, 68, 2) points in original pixels."""
    return eye_distance(points_original, nme_indices(comp))


def nme(pred: np.ndarray, true: np.ndarray, comp: Competition | None = None) -> np.ndarray:
    """(N,) per-face mean point-to-point error over the normaliser (both in original pixels),
    as a fraction: kit.metrics' NME (the one kit train reports, in %) with unit 1."""
    return nme_per_face(pred, true, nme_normaliser(true, comp), unit=1.0)


# --- a synthetic example competition ----------------------------------------------------------


def write_example(
    folder: Path, comp: Competition, n_train: int = 24, n_test: int = 8, seed: int = 0
) -> Path:
    """A small synthetic competition in the exact raw formats; returns `folder`.

    Photos of varied sizes hold synthetic faces at random places; AFW-like photos with two faces
    are written once per face (<photo>_1.jpg, <photo>_2.jpg); the first photo of each split has
    a box partly outside the image; the first four training faces also get .pts files (bare and
    header variants); a few images are PNG.
    """
    opts = options(comp)
    rng = np.random.default_rng(seed)
    train = _example_faces(folder, n_train, rng, split="train")
    test = _example_faces(folder, n_test, rng, split="test")
    write_text(folder / opts["train_xml"], formats.format_train_xml(train, "synthetic train"))
    test_boxes = [f._replace(points=None, size=None) for f in test]
    write_text(folder / opts["test_xml"], formats.format_test_xml(test_boxes, "synthetic test"))
    ids = np.arange(len(test) * 2 * len(comp.keypoint_names))
    write_text(
        folder / opts["sample_submission"],
        "Id,Predicted\n" + "".join(f"{i},0\n" for i in ids),
    )
    for k, face in enumerate(train[:4]):
        pts = (folder / face.file).with_suffix(".pts")
        write_text(pts, format_pts(face.points, header=k >= 2))
    return folder


def _example_faces(folder: Path, n_faces: int, rng: np.random.Generator, split: str) -> list[Face]:
    faces: list[Face] = []
    photo = 0
    while len(faces) < n_faces:
        pair = split == "train" and photo % 3 == 1 and n_faces - len(faces) >= 2
        image, labels = _example_photo(2 if pair else 1, rng, edge=photo == 0)
        number = int(rng.integers(10**8, 10**10))
        for k, (points, box) in enumerate(labels, start=1):
            if pair:
                file = f"afw/{number}_{k}.jpg"
            elif split == "train" and photo % 4 == 2:
                file = f"lfpw/trainset/image_{photo:04d}.png"
            else:
                file = f"helen/{split}set/{number}_1.jpg"
            _save_image(folder / file, image)
            faces.append(Face(file, box, points, image.size, split, 0, 1))
        photo += 1
    return faces


def _example_photo(
    n_faces: int, rng: np.random.Generator, edge: bool
) -> tuple[Image.Image, list[tuple[np.ndarray, Box]]]:
    """An RGB photo with n synthetic faces, and each face's (68, 2) points and dlib box."""
    sizes = [int(s) for s in rng.integers(72, 136, n_faces)]
    width = sum(sizes) + int(rng.integers(16, 140))
    height = max(sizes) + int(rng.integers(16, 120))
    background = rng.integers(30, 220, 3) + rng.normal(0, 8, (height, width, 3))
    photo = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    slack = width - sum(sizes)
    x, labels = int(rng.integers(0, slack // n_faces + 1)), []
    for size in sizes:
        local = np.round(sample_shapes(1, size, rng)[0].astype(np.float64), 2)
        face = render_face(local, size, rng)
        box = _dlib_style_box(local, rng)
        if edge and not labels:
            x = -int(box.left) - 4  # this box starts 4 px left of the image
        y = int(rng.integers(0, height - size + 1))
        tint = rng.uniform(0.8, 1.15, 3)
        rgb = np.clip(face[..., None] * tint, 0, 255).astype(np.uint8)
        photo.paste(Image.fromarray(rgb), (x, y))
        labels.append((local + np.array([x, y]), box._replace(left=box.left + x, top=box.top + y)))
        x += size + int(rng.integers(0, slack // n_faces + 1))
    return photo, labels


def _dlib_style_box(points: np.ndarray, rng: np.random.Generator) -> Box:
    """A square whole-pixel box like dlib's detector gives (the proxy README's calibration)."""
    lo, hi = points.min(0), points.max(0)
    (w, h), centre = hi - lo, (lo + hi) / 2
    nose = points[30, 0] - centre[0]
    side = (0.5733 * w + 0.4762 * h) * rng.normal(1, 0.05)
    cx = centre[0] + 0.0356 * w - 0.0635 * h + 0.5376 * nose + rng.normal(0, 0.03) * side
    cy = centre[1] + 0.0789 * w - 0.1903 * h + rng.normal(0, 0.04) * side
    side_px = max(2, round(side))
    half = (side_px - 1) / 2
    return Box(float(round(cx - half)), float(round(cy - half)), float(side_px), float(side_px))


def _save_image(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    if path.suffix == ".png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format="JPEG", quality=90)
    write_bytes(path, buffer.getvalue())


# --- the submission file ----------------------------------------------------------------------


def write_submission(
    path: Path,
    comp: Competition,
    raw_dir: Path,
    test: KeypointData,
    predictions: np.ndarray,
    subset_predictions: dict[str, np.ndarray] | None = None,
) -> dict[str, int]:
    """Write ``Id,Predicted`` to `path`: Id = i * 2K + j for test face i in the test XML's
    order and j over (x0, y0, x1, y1, ...), in ORIGINAL image pixels (each face's crop mapped
    back). Every face needs all keypoints, so `subset_predictions` is not used."""
    points = np.asarray(predictions, np.float64)
    expected = (len(test), comp.num_keypoints, 2)
    if points.shape != expected:
        raise DataError(f"predictions have shape {points.shape}, expected {expected}")
    values = test.to_original_coords(points).reshape(len(test), -1).ravel()
    if not np.isfinite(values).all():
        face = int(np.argmax(~np.isfinite(values))) // (2 * comp.num_keypoints)
        raise DataError(
            f"no prediction for test face {test.ids[face]!r}",
            hint="the predictions do not cover every keypoint",
        )
    frame = pd.DataFrame({"Id": np.arange(len(values)), "Predicted": values})
    check_submission_frame(frame, comp, len(test), raw_dir, shown=path.name)
    write_text(path, frame.to_csv(index=False, float_format="%.4f", lineterminator="\n"))
    return {"rows": len(frame), "images": len(test), "images_from_subset": 0, "values_clipped": 0}


def check_submission_frame(
    frame: pd.DataFrame, comp: Competition, faces: int, raw_dir: Path, shown: str = "submission"
) -> None:
    """Id,Predicted; Ids 0 .. faces * 2K - 1 in order, each once (and the sample submission's
    Ids where it exists); finite values."""
    sample = raw_dir / options(comp)["sample_submission"]
    check_id_predicted(
        frame, faces, 2 * comp.num_keypoints, sample, shown, noun="faces", source="the test XML"
    )


def check_submission(path: Path, comp: Competition, raw_dir: Path, test: KeypointData) -> None:
    """Validate a written submission file for the `test` faces."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read as CSV: {exc}", path=path) from exc
    check_submission_frame(frame, comp, len(test), raw_dir, shown=str(path))
