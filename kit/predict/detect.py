"""Face boxes for `kit predict`, where a competition's network sees a face crop.

A `FaceDetector` is any callable from an (H, W, 3) uint8 RGB photo to face boxes (x, y, w, h)
in its pixels (x, y: the box's top-left edge; pixel k spans [k, k + 1]). The one built in is
OpenCV's Haar cascade for frontal faces, whose model XML ships inside opencv-python-headless
(``cv2.data.haarcascades``; OpenCV 5 dropped it, hence ``<5`` in the ``detect`` extra). cv2 is
imported here only, and only when a photo needs a box that --box did not give: kit works
without it (``pip install 'kit[detect]'`` adds it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from kit.errors import KitError

Box = tuple[float, float, float, float]  # x, y, w, h in the photo's pixels

HAAR_MODEL = "haarcascade_frontalface_default.xml"
# OpenCV's usual settings: a 10 % step between scales, a face where 5 windows agree, and no
# face under 1/20 of the photo's shorter side (nor under the cascade's own 24 px).
SCALE_FACTOR = 1.1
MIN_NEIGHBOURS = 5
MIN_FACE_SHARE = 1 / 20


class FaceDetector(Protocol):
    def __call__(self, image: np.ndarray) -> list[Box]:
        """Every face found in an (H, W, 3) uint8 RGB photo (none: an empty list)."""


class HaarDetector:
    """OpenCV's Haar cascade (Viola-Jones) on the photo's histogram-equalised gray image."""

    def __init__(self, model: str = HAAR_MODEL):
        cv2 = import_cv2()
        path = Path(cv2.data.haarcascades) / model
        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise KitError("OpenCV cannot load its face model", path=path)

    def __call__(self, image: np.ndarray) -> list[Box]:
        cv2 = self._cv2
        gray = cv2.equalizeHist(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY))
        side = max(24, round(min(gray.shape) * MIN_FACE_SHARE))
        found = self._cascade.detectMultiScale(
            gray, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBOURS, minSize=(side, side)
        )
        return [tuple(float(v) for v in box) for box in np.asarray(found).reshape(-1, 4)]


def import_cv2():
    """cv2, or the one-line error that says how to do without it."""
    try:
        import cv2
    except ImportError as exc:
        raise KitError(
            "finding faces needs OpenCV, which is not installed",
            hint="pip install 'kit[detect]' (opencv-python-headless), or give the face with "
            "--box x,y,w,h",
        ) from exc
    return cv2


def largest(boxes: list[Box]) -> Box:
    """The largest box by area (the first on a tie)."""
    return max(boxes, key=lambda b: b[2] * b[3])
