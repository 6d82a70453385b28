"""A user's photos as network inputs: read, a face box given or found, framed by the plug-in.

A photo is read as it is displayed (EXIF orientation applied, as a photo viewer shows it), so
its keypoints come back in the pixels you see. Boxes are (x, y, w, h) in those pixels, x and y
the box's top-left edge (pixel k spans [k, k + 1]). Each problem of one photo (unreadable, no
face found, a box outside it) is a `KitError` naming the file, so the caller can go on with the
other photos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from kit.competition import Competition, PhotoPlugin
from kit.errors import DataError, KitError
from kit.predict.detect import Box, FaceDetector, largest

GIVEN = "--box"  # where a photo's box came from: the command line,
DETECTED = "detector"  # the face detector,
WHOLE = "none"  # or there is none: the network sees the whole photo


@dataclass(frozen=True)
class Framed:
    """One photo as the network's input.

    size:        the photo's (width, height), as displayed (its pixels are not kept: many
                 large photos would fill the memory; the picture reads it again)
    input:       (S, S) uint8 gray, the network's input
    to_original: (2, 3) float32 affine from input pixels to the photo's pixels
    box:         the face box used (None: the whole photo)
    box_from:    GIVEN, DETECTED or WHOLE
    note:        how the box was chosen, in words
    """

    path: Path
    size: tuple[int, int]
    input: np.ndarray
    to_original: np.ndarray
    box: Box | None
    box_from: str
    note: str


@dataclass(frozen=True)
class Failed:
    """A photo that could not be predicted, and why (one line naming it)."""

    path: Path
    reason: str


def parse_box(text: str) -> Box:
    """ "x,y,w,h" (numbers, w and h > 0) -> a box; a KitError saying what is wrong."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 4 or not all(np.isfinite(values)):
        raise KitError(f"--box {text!r} is not x,y,w,h", hint="four numbers, e.g. 120,80,200,200")
    if values[2] <= 0 or values[3] <= 0:
        raise KitError(f"--box {text!r}: width and height must be positive")
    return values  # type: ignore[return-value]


def photo_plugin(comp: Competition) -> PhotoPlugin:
    """The competition's plug-in, checked to define what `kit predict` calls."""
    plugin = comp.plugin
    if not isinstance(plugin, PhotoPlugin):
        raise KitError(
            f"{comp.name}'s plug-in cannot frame a photo",
            path=comp.root / comp.module_file,
            hint="add photo_needs_face and photo_input (kit.competition.PhotoPlugin)",
        )
    return plugin


def read_photo(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file, EXIF orientation applied."""
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise DataError(f"cannot read the image: {reason}", path=path) from exc


# A face box may overhang the photo (a face cut by its edge), but one far larger than the
# photo frames mostly padding, and framing it would allocate its whole area.
MAX_BOX_SCALE = 2.0


def check_box(path: Path, box: Box, width: int, height: int) -> None:
    """A box whose centre lies outside the photo frames nothing of it; one over
    MAX_BOX_SCALE times the photo's width or height frames mostly what is not there."""
    x, y, w, h = box
    if not (0 <= x + w / 2 <= width and 0 <= y + h / 2 <= height):
        raise DataError(
            f"the box {describe_box(box)} lies outside the {width}x{height} photo",
            path=path,
            hint="--box x,y,w,h in the photo's pixels, its centre inside the photo",
        )
    if w > MAX_BOX_SCALE * width or h > MAX_BOX_SCALE * height:
        raise DataError(
            f"the box {describe_box(box)} is over {MAX_BOX_SCALE:g} times the size of the "
            f"{width}x{height} photo",
            path=path,
            hint=f"--box x,y,w,h in the photo's pixels, at most {MAX_BOX_SCALE * width:g}x"
            f"{MAX_BOX_SCALE * height:g}",
        )


def describe_box(box: Box) -> str:
    x, y, w, h = box
    return f"{x:g},{y:g} {w:g}x{h:g}"


def face_box(path: Path, photo: np.ndarray, detector: FaceDetector) -> tuple[Box, str]:
    """The detector's largest face, and a note saying so; a KitError when there is none."""
    found = detector(photo)
    if not found:
        raise DataError(
            "no face found", path=path, hint="give the face with --box x,y,w,h (photo pixels)"
        )
    box = largest(found)
    note = f"face {describe_box(box)} found"
    if len(found) > 1:
        note += f" (the largest of {len(found)} faces)"
    return box, note


def frame_photo(
    path: Path,
    comp: Competition,
    plugin: PhotoPlugin,
    box: Box | None,
    detector: FaceDetector | None,
) -> Framed:
    """Read `path` and bring it to the network's input: with `box`, the detector's largest
    face, or the whole photo when the competition needs no face."""
    photo = read_photo(path)
    height, width = photo.shape[:2]
    if not plugin.photo_needs_face(comp):
        box_from, note, box = WHOLE, "the whole photo", None
    elif box is not None:
        check_box(path, box, width, height)
        box_from, note = GIVEN, f"box {describe_box(box)} from --box"
    elif detector is not None:
        box, note = face_box(path, photo, detector)
        box = to_competition_box(box, comp.options.get("detector_box"))
        box_from = DETECTED
    else:
        raise KitError("no face box", path=path, hint="give --box x,y,w,h")
    image, to_original = plugin.photo_input(photo, comp, box)
    image, to_original = _checked(comp, image, to_original)
    return Framed(path, (width, height), image, to_original, box, box_from, note)


def to_competition_box(box: Box, calibration: dict[str, float] | None) -> Box:
    """A detector's box as the competition frames its faces: a competition whose boxes are
    framed otherwise (ibug-68's dlib-style boxes) states, in competition.toml's
    ``[options] detector_box = {side, dx, dy}``, its box's side and centre offset in detector
    box sides (benchmarks/detector_box.py measures them); None: the detector's box as it is."""
    if not calibration:
        return box
    x, y, w, h = box
    side = float(calibration.get("side", 1.0))
    cx = x + w / 2 + float(calibration.get("dx", 0.0)) * w
    cy = y + h / 2 + float(calibration.get("dy", 0.0)) * h
    return (cx - side * w / 2, cy - side * h / 2, side * w, side * h)


def _checked(comp: Competition, image, to_original) -> tuple[np.ndarray, np.ndarray]:
    """The plug-in's input and affine, as the network and the mapping back need them."""
    image, to_original = np.asarray(image), np.asarray(to_original, np.float32)
    size = comp.input_size
    if image.shape != (size, size) or image.dtype != np.uint8 or to_original.shape != (2, 3):
        raise KitError(
            f"photo_input returned {image.dtype} {image.shape} and an affine of "
            f"{to_original.shape}, not uint8 ({size}, {size}) and (2, 3)",
            path=comp.root / comp.module_file,
        )
    return image, to_original
