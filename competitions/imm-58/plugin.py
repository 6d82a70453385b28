"""The IMM Face Database as a class competition (CS194-26 parts 1 and 2): 58 landmarks.

Raw files (names from [options]): `imm_face_db/` holds the training photos and their .asf
shape files side by side (`NN-T[mf].jpg` + `.asf`, person NN, shot T), `test/` the test photos
(no .asf), and `sample_submission.csv`. Rows are in sorted file-name order; a training row's
group is its person, so `kit folds` never splits one person's six shots across folds.

Framing, the same for training, test and `kit predict` photos. The whole photo is the input
(there is no face box): it is converted to gray (ITU-R 601 luma) and framed as a square of
side `side`, centred on the photo, then resized to S = input_size pixels (Pillow's antialiased
bilinear resize of exactly that square):

    "crop":  side = min(w, h)   the centred square; for 640x480, the columns 80..560
    "pad":   side = max(w, h)   the photo extended by repeating its edge pixels

With the square's top-left EDGE (x0, y0) = ((w - side) / 2, (h - side) / 2) and inv = side / S,
a point maps as (0-based pixel centres)

    x_photo = (x_in + 0.5) * inv - 0.5 + x0        x_in = (x_photo - x0 + 0.5) / inv - 0.5

`to_original` stores the first map as a (2, 3) affine; kit inverts it exactly. Landmarks are
`x_rel * w`, `y_rel * h` in the photo's pixels, as the dataset's README defines them.

Submissions: part 2 (all 58 points) is `Id,Predicted` with Id = i * 116 + j, i the test photo's
index in sorted file-name order and j over x0, y0, ..., x57, y57, in the photo's pixels, checked
against `sample_submission.csv`. Part 1 and any subset in `submit_subsets` (the nose tip) is
the same layout over that subset's points alone: Id = i * 2k + j (the nose tip: i * 2 + j).
"""

from __future__ import annotations

import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from kit.competition import sibling_module
from kit.data.arrays import KeypointData
from kit.data.crops import crop_square, luma, open_gray, square_crop, to_input
from kit.data.id_predicted import check_id_predicted
from kit.data.synthetic import render_face, sample_shapes
from kit.errors import DataError, KitError
from kit.workspace import write_bytes, write_text

if TYPE_CHECKING:
    from kit.competition import Competition


asf = sibling_module(__file__, "asf")

DEFAULTS: dict[str, Any] = {
    "train_folder": "imm_face_db",
    "test_folder": "test",
    "sample_submission": "sample_submission.csv",
    "framing": "crop",
}
FRAMINGS = ("crop", "pad")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
PERSON = re.compile(r"^(\d+)-\d+[a-z]?$", re.IGNORECASE)  # IMM's NN-T[m|f]


def options(comp: Competition) -> dict[str, Any]:
    """The competition's [options] with defaults, checked."""
    opts = {**DEFAULTS, **comp.options}
    if opts["framing"] not in FRAMINGS:
        raise KitError(
            f"options.framing {opts['framing']!r} is not crop|pad",
            path=comp.root / "competition.toml",
        )
    return opts


# --- the plug-in protocol ---------------------------------------------------------------------


def required_files(comp: Competition) -> list[str]:
    """The sample submission; the two photo folders are checked by load(), which names them."""
    return [options(comp)["sample_submission"]]


def load(raw_dir: Path, comp: Competition) -> tuple[KeypointData, KeypointData]:
    """Parse and verify both splits: framed gray photos, keypoints in input pixels."""
    opts = options(comp)
    train_dir = _folder(raw_dir, opts["train_folder"], "the training photos and .asf files")
    test_dir = _folder(raw_dir, opts["test_folder"], "the test photos")
    shapes = _training_shapes(raw_dir, train_dir, comp)
    test_photos = _photos(test_dir)
    if not test_photos:
        raise DataError("holds no photo", path=opts["test_folder"], hint=_suffix_hint())
    train = _split(
        raw_dir, [train_dir / s.host_image for s in shapes], comp, [s.relative for s in shapes]
    )
    return train, _split(raw_dir, test_photos, comp, None)


def photo_needs_face(comp: Competition) -> bool:
    """The whole photo is the input: no face box."""
    return False


def photo_input(
    image: np.ndarray, comp: Competition, box: tuple[float, float, float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """An (H, W, 3) RGB or (H, W) gray uint8 photo -> the framed (S, S) gray input and its
    (2, 3) map to the photo's pixels; `box` is not used (the whole photo is the input)."""
    rgb = np.asarray(image, np.uint8)
    gray = luma(rgb) if rgb.ndim == 3 else rgb
    height, width = gray.shape
    transform = frame_transform(width, height, comp.input_size, options(comp)["framing"])
    return frame_pixels(gray, transform, comp.input_size), transform


# --- reading the folders ----------------------------------------------------------------------


def _folder(raw_dir: Path, name: str, what: str) -> Path:
    folder = raw_dir / name
    if not folder.is_dir():
        raise DataError(
            f"no such folder (it should hold {what})",
            path=name,
            hint="give --from the competition's folder or zip, as the class distributes it",
        )
    return folder


def _suffix_hint() -> str:
    return f"photos end in {', '.join(IMAGE_SUFFIXES)}"


def _photos(folder: Path) -> list[Path]:
    """Image files directly in `folder`, in sorted file-name order (the submission's order)."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )


def _training_shapes(raw_dir: Path, folder: Path, comp: Competition) -> list[Any]:
    """Every .asf file of the training folder, checked against its photo, in photo order."""
    shown = folder.relative_to(raw_dir).as_posix()
    files = sorted(folder.glob("*.asf"), key=lambda p: p.name)
    if not files:
        raise DataError("holds no .asf shape file", path=shown, hint="training needs the labels")
    shapes = []
    for path in files:
        where = f"{shown}/{path.name}"
        shape = asf.read_asf(path, where, comp.num_keypoints)
        if "/" in shape.host_image or "\\" in shape.host_image:
            raise DataError(f"host image {shape.host_image!r} is not a file name", path=where)
        if not (folder / shape.host_image).is_file():
            raise DataError(f"names host image {shape.host_image!r}, not in {shown}", path=where)
        shapes.append(shape)
    hosts = [s.host_image for s in shapes]
    if len(set(hosts)) != len(hosts):
        twice = next(h for h in hosts if hosts.count(h) > 1)
        raise DataError(f"two .asf files name the host image {twice!r}", path=shown)
    unlabelled = sorted({p.name for p in _photos(folder)} - set(hosts))
    if unlabelled:
        raise DataError(
            f"photo {unlabelled[0]!r} has no .asf file"
            + (f" (and {len(unlabelled) - 1} more)" if len(unlabelled) > 1 else ""),
            path=shown,
            hint="every training photo needs its shape file; test photos go in the test folder",
        )
    return sorted(shapes, key=lambda s: s.host_image)


def _split(
    raw_dir: Path, photos: list[Path], comp: Competition, relative: list[np.ndarray] | None
) -> KeypointData:
    """Open every photo (in a thread pool), frame it, and assemble KeypointData."""
    framing, size = options(comp)["framing"], comp.input_size

    def frame(path: Path) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        gray = open_gray(path, path.relative_to(raw_dir).as_posix())
        height, width = gray.shape
        transform = frame_transform(width, height, size, framing)
        return frame_pixels(gray, transform, size), transform, (width, height)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        framed = list(pool.map(frame, photos))
    n = len(photos)
    images = np.stack([f[0] for f in framed]) if n else np.zeros((0, size, size), np.uint8)
    to_original = np.stack([f[1] for f in framed]).astype(np.float32)
    keypoints = np.full((n, comp.num_keypoints, 2), np.nan, np.float32)
    if relative is not None:
        pixels = np.stack(
            [r * np.array(f[2], np.float64) for r, f in zip(relative, framed, strict=True)]
        )
        keypoints = to_input(pixels, to_original).astype(np.float32)
    names = [p.name for p in photos]
    return KeypointData(
        images=images,
        keypoints=keypoints,
        ids=np.array(names, dtype=str),
        groups=np.array([person(name) for name in names], dtype=str),
        to_original=to_original,
    )


def person(file_name: str) -> str:
    """The person of an IMM file name ('07-3f.jpg' -> 'person 07'); else the name itself."""
    stem = file_name.rsplit(".", 1)[0]
    match = PERSON.match(stem)
    return f"person {match.group(1)}" if match else stem


# --- framing ----------------------------------------------------------------------------------


def frame_square(width: int, height: int, framing: str) -> tuple[float, float, float]:
    """(x0, y0, side): the square's top-left EDGE in photo pixels and its side."""
    side = float(min(width, height) if framing == "crop" else max(width, height))
    return (width - side) / 2, (height - side) / 2, side


def frame_transform(width: int, height: int, size: int, framing: str) -> np.ndarray:
    """(2, 3) affine from input pixels to photo pixels (the module docstring's formula)."""
    return square_crop(*frame_square(width, height, framing), size)


def frame_pixels(gray: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """Resample a (H, W) uint8 photo through `transform` into the (size, size) input; a "pad"
    frame repeats the photo's edge pixels."""
    return crop_square(gray, transform, size, "edge")


# --- the submission file ----------------------------------------------------------------------


def write_submission(
    path: Path,
    comp: Competition,
    raw_dir: Path,
    test: KeypointData,
    predictions: np.ndarray,
    subset_predictions: dict[str, np.ndarray] | None = None,
) -> dict[str, int]:
    """Write ``Id,Predicted`` for every keypoint, or for a `submit_subsets` subset when the
    predictions cover exactly that subset (the module docstring's layout); photo pixels."""
    points = np.asarray(predictions, np.float64)
    expected = (len(test), comp.num_keypoints, 2)
    if points.shape != expected:
        raise DataError(f"predictions have shape {points.shape}, expected {expected}")
    columns = submitted_keypoints(comp, np.isfinite(points).all(axis=(0, 2)))
    values = test.to_original_coords(points)[:, columns].reshape(len(test), -1).ravel()
    frame = pd.DataFrame({"Id": np.arange(len(values)), "Predicted": values})
    check_submission_frame(frame, comp, len(test), raw_dir, columns, shown=path.name)
    write_text(path, frame.to_csv(index=False, float_format="%.4f", lineterminator="\n"))
    return {"rows": len(frame), "images": len(test), "keypoints": len(columns)}


def submitted_keypoints(comp: Competition, predicted: np.ndarray) -> list[int]:
    """The keypoints a submission holds: all, or the one `submit_subsets` subset predicted."""
    if predicted.all():
        return list(range(comp.num_keypoints))
    subset = comp.submittable_subset(np.flatnonzero(predicted).tolist())
    if subset is not None:
        return comp.subset_indices(subset)
    missing = [comp.keypoint_names[k] for k in np.flatnonzero(~predicted)[:3]]
    raise DataError(
        f"no prediction for keypoint {', '.join(missing)} on every test photo",
        hint="submit a source that predicts every keypoint or exactly one of the subsets "
        f"{', '.join(comp.submit_subsets) or '(none declared)'}",
    )


def check_submission_frame(
    frame: pd.DataFrame,
    comp: Competition,
    photos: int,
    raw_dir: Path,
    columns: list[int],
    shown: str = "submission",
) -> None:
    """Id,Predicted; Ids 0 .. photos * 2k - 1 in order (and the sample submission's Ids for
    a full file); finite values."""
    full = len(columns) == comp.num_keypoints
    sample = raw_dir / options(comp)["sample_submission"] if full else None
    check_id_predicted(
        frame, photos, 2 * len(columns), sample, shown, noun="photos", source="the test folder"
    )


# --- a synthetic example competition ----------------------------------------------------------

# IMM's 58 points from the 68 iBUG points that kit's synthetic faces are drawn with: each is
# the mean of the listed points (the jaw is interpolated along iBUG's 17 jaw points).
# fmt: off
_FROM_68: tuple[tuple[int, ...], ...] = (
    (45,), (44,), (44, 43), (43,), (42,), (47,), (47, 46), (46,),  # left eye (image right)
    (36,), (37,), (37, 38), (38,), (39,), (40,), (40, 41), (41,),  # right eye
    (22,), (23,), (24,), (25,), (26,), (21,), (20,), (19,), (18,), (17,),  # brows
    (48,), (50,), (51,), (52,), (54,), (56,), (57,), (58,),  # mouth
    (27, 39), (29, 31), (31,), (32,), (32, 33), (33,), (33, 34), (34,), (35,), (29, 35),
    (27, 42),  # nose
)
# fmt: on


def points_from_68(points: np.ndarray) -> np.ndarray:
    """(N, 68, 2) iBUG landmarks -> (N, 58, 2) in IMM's order."""
    along = np.linspace(0, 16, 13)
    jaw = np.stack(
        [
            np.stack([np.interp(along, np.arange(17), p[:17, axis]) for axis in (0, 1)], -1)
            for p in points
        ]
    )
    rest = np.stack([points[:, list(idx)].mean(axis=1) for idx in _FROM_68], axis=1)
    return np.concatenate([jaw, rest], axis=1)


def write_example(
    folder: Path,
    comp: Competition,
    n_train: int = 24,
    n_test: int = 8,
    seed: int = 0,
    photo_size: tuple[int, int] = (320, 240),
) -> Path:
    """A small synthetic competition in the exact raw layout; returns `folder`.

    Training photos are `NN-T[mf].jpg` + `.asf` (six shots per person, the last person may have
    fewer; every sixth .asf has the three user fields), test photos `test/test_NNN.jpg`, and a
    sample submission of zeros. Photos are colour, `photo_size` (4:3 like IMM's, smaller so tests
    stay fast), each holding one synthetic face near the centre. Returns `folder`.
    """
    opts = options(comp)
    rng = np.random.default_rng(seed)
    train_dir, test_dir = folder / opts["train_folder"], folder / opts["test_folder"]
    for k in range(n_train):
        name = f"{k // 6 + 1:02d}-{k % 6 + 1}{'mf'[k // 6 % 2]}"
        photo, relative = example_photo(rng, photo_size)
        _save_jpeg(train_dir / f"{name}.jpg", photo)
        text = asf.format_asf(_example_shape(relative, f"{name}.jpg"))
        if k % 6 == 5:  # the user-field variant some IMM files have
            text = re.sub(r"(\t\d+ \t\d+ \t\d+)$", r"\1\t0.00\t0.00\t0.00", text, flags=re.M)
        write_text(train_dir / f"{name}.asf", text)
    for k in range(n_test):
        _save_jpeg(test_dir / f"test_{k:03d}.jpg", example_photo(rng, photo_size)[0])
    ids = np.arange(n_test * 2 * comp.num_keypoints)
    write_text(
        folder / opts["sample_submission"], "Id,Predicted\n" + "".join(f"{i},0\n" for i in ids)
    )
    return folder


def example_photo(
    rng: np.random.Generator, photo_size: tuple[int, int]
) -> tuple[Image.Image, np.ndarray]:
    """A colour photo with one synthetic face and its (58, 2) points relative to the photo."""
    width, height = photo_size
    side = int(height * 0.8)
    local = sample_shapes(1, side, rng)[0].astype(np.float64)
    face = render_face(local, side, rng)
    background = rng.integers(30, 220, 3) + rng.normal(0, 8, (height, width, 3))
    photo = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    x = (width - side) // 2 + int(rng.integers(-width // 16, width // 16 + 1))
    y = (height - side) // 2 + int(rng.integers(-height // 16, height // 16 + 1))
    tint = rng.uniform(0.8, 1.15, 3)
    photo.paste(Image.fromarray(np.clip(face[..., None] * tint, 0, 255).astype(np.uint8)), (x, y))
    points = points_from_68((local + np.array([x, y]))[None])[0]
    return photo, np.round(points / np.array([width, height]), 8)


def _example_shape(relative: np.ndarray, host: str) -> Any:
    """IMM's path, type and connection columns for a 58-point shape."""
    paths = np.repeat(np.arange(7), [13, 8, 8, 5, 5, 8, 11])
    closed = np.isin(paths, (1, 2, 5))  # the eyes and the mouth are closed contours
    links = []
    for k, path in enumerate(paths):
        members = np.flatnonzero(paths == path)
        first, last = members[0], members[-1]
        if closed[k]:
            links.append((last if k == first else k - 1, first if k == last else k + 1))
        else:
            links.append((max(k - 1, first), min(k + 1, last)))
    return asf.Shape(relative, paths, np.where(closed, 0, 4), np.array(links), host)


def _save_jpeg(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    write_bytes(path, buffer.getvalue())
