"""Square face crops: the affine from a crop's input pixels to the photo's, and the resampling.

Shared by the plug-ins that cut a face out of a photo (their margins and offsets, the
competition-specific part, stay in each plug-in). Coordinates are 0-based pixel centres; a
crop's edges are in edge units (pixel k spans [k, k + 1], so 0 is the photo's border). A square
crop with top-left edge (x0, y0) and side `side`, resized to S pixels (scale s = S / side):

    x_in = (x_orig - x0 + 0.5) * s - 0.5          x_orig = (x_in + 0.5) / s - 0.5 + x0

`square_crop` stores the second map as a (2, 3) affine (KeypointData.to_original's convention)
and `crop_square` resamples the pixels with exactly that map (Pillow's antialiased resize).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from kit.errors import DataError


def square_crop(x0: float, y0: float, side: float, size: int) -> np.ndarray:
    """(2, 3) float64 affine from input pixels of the `size`-pixel crop of the square with
    top-left edge (x0, y0) and side `side` to the photo's pixels."""
    inv = side / size
    return np.array([[inv, 0, x0 + 0.5 * inv - 0.5], [0, inv, y0 + 0.5 * inv - 0.5]])


def to_input(points: np.ndarray, to_original: np.ndarray) -> np.ndarray:
    """Inverse of KeypointData.to_original_coords: (N, K, 2) photo pixels -> input pixels of
    the (N, 2, 3) `to_original` affines."""
    a = np.asarray(to_original, np.float64)
    inverse = np.linalg.inv(a[:, :, :2])
    return np.einsum("nij,nkj->nki", inverse, points - a[:, None, :, 2])


def crop_edges(to_original: np.ndarray, size: int) -> tuple[float, float, float]:
    """(x0, y0, side) of a square crop transform: its top-left EDGE and side, original pixels."""
    inv = float(to_original[0, 0])
    if to_original[0, 1] or to_original[1, 0] or not math.isclose(to_original[1, 1], inv):
        raise ValueError("only axis-aligned square crops are supported")
    shift = 0.5 - 0.5 * inv
    return float(to_original[0, 2]) + shift, float(to_original[1, 2]) + shift, inv * size


def crop_square(
    gray: np.ndarray, to_original: np.ndarray, size: int, pad: str = "edge"
) -> np.ndarray:
    """Resample a (H, W) uint8 image through `to_original` into a (size, size) uint8 crop;
    parts outside the image are padded ("edge": the border replicated, "constant": black)."""
    x0, y0, side = crop_edges(to_original, size)
    px0, py0 = math.floor(x0), math.floor(y0)
    px1, py1 = math.ceil(x0 + side), math.ceil(y0 + side)
    window = padded_window(gray, px0, py0, px1, py1, pad)
    box = (
        x0 - px0,
        y0 - py0,
        min(x0 - px0 + side, px1 - px0),
        min(y0 - py0 + side, py1 - py0),
    )
    resized = Image.fromarray(window).resize((size, size), Image.Resampling.BILINEAR, box=box)
    return np.asarray(resized, np.uint8)


def padded_window(gray: np.ndarray, x0: int, y0: int, x1: int, y1: int, pad: str) -> np.ndarray:
    """gray[y0:y1, x0:x1] where the range may run past the image: padded, never an error."""
    h, w = gray.shape
    if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
        return np.ascontiguousarray(gray[y0:y1, x0:x1])
    if pad == "edge":
        rows = np.clip(np.arange(y0, y1), 0, h - 1)
        cols = np.clip(np.arange(x0, x1), 0, w - 1)
        return gray[np.ix_(rows, cols)]
    window = np.zeros((y1 - y0, x1 - x0), np.uint8)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy0 < sy1 and sx0 < sx1:
        window[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = gray[sy0:sy1, sx0:sx1]
    return window


def luma(rgb: np.ndarray) -> np.ndarray:
    """(H, W) uint8 gray of an (H, W, 3) uint8 RGB photo: ITU-R 601 luma, as Pillow's
    convert("L") makes it (what the plug-ins read their training images with)."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).convert("L"))


def open_gray(path: Path, shown: str) -> np.ndarray:
    """(H, W) uint8 luma of an image file (as `luma`), named `shown` in a one-line DataError
    when it cannot be read. EXIF orientation is NOT applied: datasets' landmarks are in
    stored-pixel coordinates."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("L"))
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot open image: {exc}", path=shown) from exc
