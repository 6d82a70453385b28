"""`input_scale`: any family at an input larger than the competition's own (issue 24's knob that
trades cost for accuracy), as a model setting every family accepts.

The network is built for S x scale pixels and upsamples the S x S images first (bilinear); its
codec works in those pixels, and `ScaledCodec` converts keypoints in and out, so training,
prediction and the shape check still speak the competition's S x S pixels. On 96 px faces a
ResNet's last stage sees 3 x 3 cells; at scale 2 it sees 6 x 6 (about 4x the cost).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from kit.errors import KitError
from kit.models.codec import KeypointCodec

INPUT_SCALE_RANGE = (1.0, 4.0)  # below 1 discards pixels; above 4 costs 16x for little


def check_input_scale(scale: float) -> float:
    """`scale` as a float within INPUT_SCALE_RANGE, else a KitError naming it."""
    low, high = INPUT_SCALE_RANGE
    if not isinstance(scale, int | float) or not low <= float(scale) <= high:
        raise KitError(f"input_scale {scale} is out of range", hint=f"use {low:g} to {high:g}")
    return float(scale)


def scaled_size(input_size: int, scale: float) -> int:
    """The network's input side for `scale` (checked against INPUT_SCALE_RANGE)."""
    return round(input_size * check_input_scale(scale))


class Upsample(nn.Module):
    """(B, C, S, S) -> (B, C, size, size), bilinear."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)


class ScaledCodec(KeypointCodec):
    """`inner` (a codec for `inner.input_size` pixels) seen from `input_size` pixels: pixel
    centres map onto pixel centres, (x + 0.5) * r - 0.5 with r the ratio of the sizes."""

    def __init__(self, inner: KeypointCodec, input_size: int):
        super().__init__(inner.num_keypoints, input_size)
        self.inner = inner
        self.ratio = inner.input_size / input_size

    def _up(self, keypoints: Tensor) -> Tensor:
        return (keypoints + 0.5) * self.ratio - 0.5

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.inner.output_shape

    def set_prior(self, mean_keypoints: Tensor) -> None:
        self.inner.set_prior(self._up(mean_keypoints))

    def encode(self, keypoints: Tensor) -> tuple[Tensor, Tensor]:
        self._check_keypoints(keypoints)
        return self.inner.encode(self._up(keypoints))

    def decode(self, output: Tensor) -> Tensor:
        return (self.inner.decode(output) + 0.5) / self.ratio - 0.5

    def loss(
        self, output: Tensor, targets: Tensor, mask: Tensor, weights: Tensor | None = None
    ) -> Tensor:
        return self.inner.loss(output, targets, mask, weights)


__all__ = ["INPUT_SCALE_RANGE", "ScaledCodec", "Upsample", "check_input_scale", "scaled_size"]
