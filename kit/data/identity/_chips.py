"""Face chips for the face net: each row's face, similarity-warped into dlib's 150 x 150 chip
frame (dlib's get_face_chip with padding 0.25), grey replicated to RGB.

The per-row fit is kit's own (align: anchors onto the data's Procrustes mean shape, eyes
weighted over nose and mouth, one-anchor and no-anchor rows handled); one similarity then maps
that mean shape's eyes and nose onto where dlib's mean face puts them. Competitions name
different mouth points (bottom lip, mouth corners), so the mouth stays out of that map.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from kit.data.identity._align import Anchors, _fit_similarity, align
from kit.data.identity._face_net import CHIP

PADDING = 0.25  # dlib's compute_face_descriptor default
# dlib's mean face (get_face_chip_details, points 17-67 in 0..1 units): the subject's right
# eye (points 36-41), left eye (42-47), nose tip (30).
_RIGHT_EYE = ((0.121737, 0.216423), (0.187122, 0.178758), (0.265825, 0.179852),
              (0.334606, 0.231733), (0.260918, 0.245099), (0.182743, 0.244077))  # fmt: skip
_LEFT_EYE = ((0.645647, 0.231733), (0.714428, 0.179852), (0.793132, 0.178758),
             (0.858516, 0.216423), (0.79751, 0.244077), (0.719335, 0.245099))  # fmt: skip
_NOSE_TIP = (0.490127, 0.515625)


def chip_template(size: int = CHIP, padding: float = PADDING) -> np.ndarray:
    """(3, 2) left eye, right eye (the subject's, kit's anchor order), nose tip in chip pixels."""
    unit = np.array([np.mean(_LEFT_EYE, 0), np.mean(_RIGHT_EYE, 0), _NOSE_TIP])
    return (padding + unit) / (2 * padding + 1) * size


def chip_transforms(keypoints: np.ndarray, anchors: Anchors) -> np.ndarray:
    """(N, 2, 3) affine maps chip pixel (x, y, 1) -> image pixel, one per row."""
    alignment = align(keypoints, anchors)
    named = 3 if anchors.nose else 2
    chip = chip_template()[:named]
    weights = np.array([1.0, 1.0, 0.5])[:named]
    a, b, tx, ty = _fit_similarity(chip, alignment.template[None, :named], weights)[0]
    to_template = np.vstack([_homogeneous(np.array([[a, b, tx, ty]]))[0], [0.0, 0.0, 1.0]])
    return _homogeneous(alignment.params) @ to_template[None]


def _homogeneous(params: np.ndarray) -> np.ndarray:
    """(N, 4) similarity parameters a, b, tx, ty -> (N, 2, 3) affine maps."""
    a, b, tx, ty = (params[:, i] for i in range(4))
    return np.stack([np.stack([a, -b, tx], -1), np.stack([b, a, ty], -1)], axis=1)


def face_chips(images: np.ndarray, transforms: np.ndarray) -> torch.Tensor:
    """(n, 3, 150, 150) float32 chips (0..255) of uint8 (n, H, W) images, by their
    chip_transforms."""
    pixels = torch.from_numpy(np.ascontiguousarray(images, np.float32))[:, None]
    _, _, h, w = pixels.shape
    # grid_sample (align_corners=True) speaks -1..1 on both sides: image = N_img A N_chip^-1.
    to_unit = np.array([[2 / (w - 1), 0, -1], [0, 2 / (h - 1), -1], [0, 0, 1]])
    half = (CHIP - 1) / 2
    from_unit = np.array([[half, 0, half], [0, half, half], [0, 0, 1]])
    square = np.concatenate([transforms, np.tile([[[0.0, 0.0, 1.0]]], (len(transforms), 1, 1))], 1)
    theta = torch.from_numpy((to_unit @ square @ from_unit)[:, :2].astype(np.float32))
    grid = F.affine_grid(theta, [len(theta), 1, CHIP, CHIP], align_corners=True)
    chips = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=True)
    return chips.expand(-1, 3, -1, -1)
