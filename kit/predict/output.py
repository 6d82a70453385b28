"""What `kit predict` writes: one CSV of keypoints in each photo's own pixels, a PNG per photo
with them drawn, and predict.json (the source, each photo's box or failure). Every file is
written atomically.

keypoints.csv, one row per (photo, keypoint), in the photos' and the keypoints' order::

    image,keypoint,x,y,box_x,box_y,box_w,box_h,box_from

x, y: 0-based pixel centres of the photo as displayed; box_*: the face box used (empty for a
whole photo); box_from: "--box", "detector" or "none".
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from kit.predict.photos import Framed
from kit.workspace import write_bytes, write_text

CSV_NAME = "keypoints.csv"
JSON_NAME = "predict.json"
COLUMNS = ("image", "keypoint", "x", "y", "box_x", "box_y", "box_w", "box_h", "box_from")
POINT_COLOUR = (255, 32, 32)  # predictions are red in every picture kit draws
BOX_COLOUR = (40, 220, 80)


def run_folder(root: Path) -> Path:
    """A new folder under `root` named by the UTC time (a suffix when two share a second)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder, n = root / stamp, 2
    while folder.exists():
        folder, n = root / f"{stamp}-{n}", n + 1
    return folder


def picture_names(paths: Sequence[Path]) -> list[str]:
    """A PNG name per photo, its stem made safe and unique (photo.jpg -> photo.png)."""
    names: list[str] = []
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:100] or "photo"
        name, n = f"{stem}.png", 2
        while name in names:
            name, n = f"{stem}-{n}.png", n + 1
        names.append(name)
    return names


def keypoint_frame(
    photos: Sequence[Framed], points: np.ndarray, keypoint_names: Sequence[str]
) -> pd.DataFrame:
    """The CSV's rows: `points` (n, K', 2) in photo pixels, named by `keypoint_names`."""
    rows = []
    for framed, photo_points in zip(photos, points, strict=True):
        box = framed.box if framed.box is not None else (None,) * 4
        for name, (x, y) in zip(keypoint_names, photo_points, strict=True):
            rows.append((str(framed.path), name, x, y, *box, framed.box_from))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def write_csv(path: Path, frame: pd.DataFrame) -> None:
    write_text(path, frame.to_csv(index=False, float_format="%.3f", lineterminator="\n"))


def draw_keypoints(photo: np.ndarray, points: np.ndarray, box: Sequence[float] | None):
    """The photo (RGB) with the face box and the keypoints drawn, dots sized to the photo."""
    canvas = Image.fromarray(photo).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    height, width = photo.shape[:2]
    line = max(1, round(min(width, height) / 300))
    if box is not None:
        x, y, w, h = box
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=BOX_COLOUR, width=line)
    r = max(2.0, min(width, height) / 150)
    for x, y in points[np.isfinite(points).all(axis=1)]:  # pixel centres: x is pixel x's middle
        draw.ellipse([x - r, y - r, x + r, y + r], fill=POINT_COLOUR, outline="white")
    return canvas


def write_png(path: Path, image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes(path, buffer.getvalue())
