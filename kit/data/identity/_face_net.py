"""A face-identity network: dlib's ResNet metric net (dlib_face_recognition_resnet_model_v1,
public domain, 99.38 % on LFW), run in torch from dlib's own weights file (_face_weights).

The topology is the one dlib's dnn_face_recognition_ex.cpp declares: a 7x7/2 convolution, a
3x3/2 max pool, 14 residual blocks (32, 64, 128, 256, 256 channels), a global average pool and
a 128-d linear projection. Its speed: benchmarks/identity_face_net.py.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kit.data.identity._face_weights import (
    STAGES,
    WEIGHTS_ENV,
    WEIGHTS_FILE,
    AffineWeights,
    ConvWeights,
    read_dlib_face_net,
)
from kit.errors import DataError

CHIP = 150  # the net's input side; its layers are locked to it
RGB_MEAN = (122.782, 117.001, 104.298)  # dlib's input_rgb_image_sized, then / 256


# ----------------------------------------------------------------------------------- the net


class _ConvAffine(nn.Module):
    """dlib's con followed by affine, folded into one convolution."""

    def __init__(self, conv: ConvWeights, affine: AffineWeights) -> None:
        super().__init__()
        out, fan_in, k, _ = conv.weight.shape
        self.conv = nn.Conv2d(fan_in, out, k, conv.stride, conv.padding)
        scale = torch.from_numpy(affine.scale)
        self.conv.weight.data = torch.from_numpy(conv.weight) * scale[:, None, None, None]
        self.conv.bias.data = torch.from_numpy(conv.bias) * scale + torch.from_numpy(affine.shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _add_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the output takes the larger of each size, the smaller input counts as
    zero beyond its own extent (top-left aligned)."""
    shape = [max(p, q) for p, q in zip(a.shape, b.shape, strict=True)]
    out = a.new_zeros(shape)
    out[: a.shape[0], : a.shape[1], : a.shape[2], : a.shape[3]] += a
    out[: b.shape[0], : b.shape[1], : b.shape[2], : b.shape[3]] += b
    return out


class _Residual(nn.Module):
    def __init__(self, first: _ConvAffine, second: _ConvAffine, down: bool) -> None:
        super().__init__()
        self.first, self.second, self.down = first, second, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.second(F.relu(self.first(x)))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        if skip.shape == y.shape:
            return F.relu(y + skip)
        return F.relu(_add_padded(y, skip))


class FaceNet(nn.Module):
    """(N, 3, 150, 150) dlib-normalised RGB chips -> (N, 128) descriptors (same person: distance
    under about 0.6)."""

    def __init__(self, layers: list[ConvWeights | AffineWeights], projection: np.ndarray) -> None:
        super().__init__()
        pairs = [_ConvAffine(c, a) for c, a in zip(layers[::2], layers[1::2], strict=True)]
        if not all(isinstance(c, ConvWeights) for c in layers[::2]):
            raise ValueError("face-net layers must alternate convolution and affine")
        self.stem = pairs[0]
        blocks, at = [], 1
        for stage, (_, count) in enumerate(STAGES):
            for i in range(count):
                blocks.append(_Residual(pairs[at], pairs[at + 1], down=stage > 0 and i == 0))
                at += 2
        self.blocks = nn.Sequential(*blocks)
        self.projection = nn.Parameter(torch.from_numpy(projection), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        x = self.blocks(x).mean(dim=(2, 3))
        return x @ self.projection


@functools.lru_cache(maxsize=2)
def load_face_net(path: Path) -> FaceNet:
    if not Path(path).is_file():
        raise DataError(
            "no face-net weights file",
            path=Path(path),
            hint=f"pip install 'kit[faces]', or point {WEIGHTS_ENV} at {WEIGHTS_FILE}",
        )
    return FaceNet(*read_dlib_face_net(path)).eval()


def describe_chips(chips: torch.Tensor, net: FaceNet, batch: int = 128) -> np.ndarray:
    """(N, 3, 150, 150) float chips in 0..255 RGB -> (N, 128) float32 descriptors."""
    mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1)
    out = []
    with torch.inference_mode():
        for start in range(0, len(chips), batch):
            out.append(net((chips[start : start + batch] - mean) / 256.0))
    if not out:
        return np.zeros((0, 128), np.float32)
    return torch.cat(out).numpy().astype(np.float32)
