"""Batched augmentation on the tensors' device: one affine matrix per sample, no per-sample loop.

The geometric part draws, per sample, a horizontal flip, a rotation, a scale and a shift, composes
them into one 2x2 matrix A and a translation t about the image centre c = (S - 1) / 2:

    keypoint p (input pixels, pixel centres)  ->  A (p - c) + c + t

and warps the image with exactly the inverse map through F.affine_grid / F.grid_sample
(align_corners=False, where normalised u = (2x + 1) / S - 1 = (x - c) / (S / 2)). A flipped
sample's keypoints are then re-labelled with `flip_perm` (left <-> right).

Padding is "border" by default: pixels pulled in from outside repeat the edge, which keeps the
image statistics close to the original (black "zeros" corners are a strong artificial cue).
Keypoints moved outside the image keep their coordinates (still valid regression targets);
missing (NaN) keypoints stay NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from kit.errors import KitError

Range = float | tuple[float, float]
PADDINGS = ("border", "zeros", "reflection")


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths; every field 0 means off.

    flip:        probability of a horizontal flip
    rotate_deg:  rotation angle uniform in [-rotate_deg, rotate_deg] degrees
    shift:       shift per axis uniform in [-shift, shift] x image size
    scale:       zoom factor uniform in [1 - scale, 1 + scale]
    brightness:  gain g multiplying the image: b -> g uniform in [1 - b, 1 + b];
                 or an explicit (low, high) range: the seeds' "dim 0.3 / bright 1.4" is (0.3, 1.4)
    contrast:    factor around each image's mean, like brightness (a float or a (low, high) range)
    noise:       standard deviation of additive Gaussian noise (images are in [0, 1])
    padding:     grid_sample padding mode: "border" (default), "zeros" or "reflection"
    """

    flip: float = 0.0
    rotate_deg: float = 0.0
    shift: float = 0.0
    scale: float = 0.0
    brightness: Range = 0.0
    contrast: Range = 0.0
    noise: float = 0.0
    padding: str = "border"

    def __post_init__(self) -> None:
        checks = {
            "flip": 0 <= self.flip <= 1,
            "rotate_deg": 0 <= self.rotate_deg <= 180,
            "shift": 0 <= self.shift < 1,
            "scale": 0 <= self.scale < 1,
            "noise": self.noise >= 0,
            "padding": self.padding in PADDINGS,
        }
        for name, ok in checks.items():
            if not ok:
                raise KitError(f"augmentation {name}={getattr(self, name)!r} is out of range")
        for name in ("brightness", "contrast"):
            low, high = self.factor_range(name)
            if not 0 <= low <= high:
                raise KitError(
                    f"augmentation {name}={getattr(self, name)!r} is out of range",
                    hint="b in [0, 1) gives a factor in [1 - b, 1 + b]; or give low,high",
                )

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any]) -> AugmentConfig:
        """Pick the augmentation keys out of a training config (other keys are ignored).

        brightness/contrast accept a float, a (low, high) pair, or the string "low,high".
        """
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in hparams:
                continue
            value = hparams[f.name]
            if f.name in ("brightness", "contrast"):
                value = _parse_range(f.name, value)
            elif f.name != "padding":
                value = _parse_float(f.name, value)
            kwargs[f.name] = value
        return cls(**kwargs)

    def factor_range(self, name: str) -> tuple[float, float]:
        value = getattr(self, name)
        if isinstance(value, tuple | list):
            return float(value[0]), float(value[1])
        return 1.0 - float(value), 1.0 + float(value)

    @property
    def geometric(self) -> bool:
        return bool(self.flip or self.rotate_deg or self.shift or self.scale)


def _parse_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise KitError(f"augmentation {name}={value!r} is not a number") from None


def _parse_range(name: str, value: Any) -> Range:
    if isinstance(value, str) and "," in value:
        value = value.split(",")
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != 2:
            raise KitError(f"augmentation {name}={value!r} must be one number or low,high")
        return (_parse_float(name, value[0]), _parse_float(name, value[1]))
    return _parse_float(name, value)


class _Sampler:
    """Uniform/normal draws from `generator` (or the global RNG), delivered on `device`."""

    def __init__(self, device: torch.device, generator: torch.Generator | None):
        self.device = device
        self.generator = generator
        self.source = generator.device if generator is not None else device

    def uniform(self, low: float, high: float, *shape: int) -> Tensor:
        u = torch.rand(shape, generator=self.generator, device=self.source)
        return (low + (high - low) * u).to(self.device)

    def normal(self, *shape: int) -> Tensor:
        return torch.randn(shape, generator=self.generator, device=self.source).to(self.device)


def augment_batch(
    images: Tensor,
    keypoints: Tensor,
    flip_perm: Tensor | Sequence[int],
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Augment images (B, C, S, S) float in [0, 1] and keypoints (B, K, 2) input pixels together.

    Returns new tensors (the inputs are not modified). Pass a torch.Generator for a reproducible
    draw; one on the images' device avoids host-to-device copies of the noise.
    """
    images, keypoints, _ = augment_weighted(images, keypoints, None, flip_perm, cfg, generator)
    return images, keypoints


def augment_weighted(
    images: Tensor,
    keypoints: Tensor,
    weights: Tensor | None,
    flip_perm: Tensor | Sequence[int],
    cfg: AugmentConfig,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """`augment_batch` that also carries per-keypoint loss weights (B, K) along: a flipped
    sample's weights are relabelled with `flip_perm` like its keypoints. The same draws as
    `augment_batch` (with the same generator), so the images and keypoints are the same."""
    _check_shapes(images, keypoints, flip_perm)
    sampler = _Sampler(images.device, generator)
    if cfg.geometric:
        flipped, matrix, shift = _affine_params(images.shape[0], images.shape[-1], cfg, sampler)
        images, keypoints = apply_affine(
            images, keypoints, flip_perm, flipped, matrix, shift, cfg.padding
        )
        if weights is not None:
            perm = torch.as_tensor(flip_perm, dtype=torch.long, device=weights.device)
            weights = torch.where(flipped.to(weights.device)[:, None], weights[:, perm], weights)
    return _photometric(images, cfg, sampler), keypoints, weights


def _check_shapes(images: Tensor, keypoints: Tensor, flip_perm: Tensor | Sequence[int]) -> None:
    if images.dim() != 4 or images.shape[-1] != images.shape[-2]:
        raise KitError(f"augment_batch needs square images (B, C, S, S), got {tuple(images.shape)}")
    b, k = images.shape[0], len(flip_perm)
    if keypoints.shape != (b, k, 2):
        raise KitError(
            f"augment_batch: keypoints {tuple(keypoints.shape)} do not match {b} images "
            f"and a flip permutation of {k} keypoints"
        )


def _affine_params(
    batch: int, size: int, cfg: AugmentConfig, sampler: _Sampler
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample (flipped (B,) bool, A (B, 2, 2), t (B, 2) pixels): p -> A (p - c) + c + t."""
    flipped = sampler.uniform(0.0, 1.0, batch) < cfg.flip
    angle = sampler.uniform(-1.0, 1.0, batch) * math.radians(cfg.rotate_deg)
    zoom = sampler.uniform(1.0 - cfg.scale, 1.0 + cfg.scale, batch)
    shift = sampler.uniform(-cfg.shift, cfg.shift, batch, 2) * size
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    mirror = 1.0 - 2.0 * flipped.float()  # -1 mirrors x before rotating
    matrix = torch.stack(
        [torch.stack([cos * mirror, -sin], -1), torch.stack([sin * mirror, cos], -1)], -2
    )
    return flipped, matrix, shift


def apply_affine(
    images: Tensor,
    keypoints: Tensor,
    flip_perm: Tensor | Sequence[int],
    flipped: Tensor,
    matrix: Tensor,
    shift: Tensor,
    padding: str = "border",
) -> tuple[Tensor, Tensor]:
    """Apply p -> A (p - c) + c + t to keypoints (B, K, 2) and the same map to images (B, C, S, S).

    flipped (B,) bool marks samples whose A mirrors x: their keypoints are relabelled by flip_perm.
    """
    size = images.shape[-1]
    centre = (size - 1) / 2
    matrix, shift = matrix.to(images.device, torch.float32), shift.to(images.device, torch.float32)
    moved = torch.einsum("bij,bkj->bki", matrix, keypoints.float() - centre) + centre
    moved = moved + shift[:, None, :]
    perm = torch.as_tensor(flip_perm, dtype=torch.long, device=keypoints.device)
    moved = torch.where(flipped.to(keypoints.device)[:, None, None], moved[:, perm], moved)

    # affine_grid maps output normalised coords to input ones: u_in = A^-1 (u_out - t_norm).
    inverse = _inverse_2x2(matrix)
    offset = -inverse @ (shift / (size / 2))[..., None]
    theta = torch.cat([inverse, offset], dim=-1).to(images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    warped = F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)
    return warped, moved.to(keypoints.dtype)


def _inverse_2x2(m: Tensor) -> Tensor:
    """Closed form: no solver launch on the GPU for a batch of tiny matrices."""
    a, b, c, d = m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1]
    adjugate = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
    return adjugate / (a * d - b * c)[:, None, None]


def _photometric(images: Tensor, cfg: AugmentConfig, sampler: _Sampler) -> Tensor:
    batch = images.shape[0]
    out = images
    if cfg.contrast:
        factor = sampler.uniform(*cfg.factor_range("contrast"), batch).view(-1, 1, 1, 1)
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        out = (out - mean) * factor.to(out.dtype) + mean
    if cfg.brightness:
        gain = sampler.uniform(*cfg.factor_range("brightness"), batch).view(-1, 1, 1, 1)
        out = out * gain.to(out.dtype)
    if cfg.noise:
        out = out + cfg.noise * sampler.normal(*images.shape).to(out.dtype)
    if out is not images:
        out = out.clamp(0.0, 1.0)
    return out
