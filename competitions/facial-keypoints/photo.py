"""A user's photo as the network's input (`kit predict`): framed as FKD frames its faces."""

from __future__ import annotations

import numpy as np

from kit.competition import Competition
from kit.data.crops import crop_square, luma, square_crop
from kit.errors import DataError

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
