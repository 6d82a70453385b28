"""Reading JSON and arrays back, validated where they are read, and content addresses (sha256
of a file, of a JSON-able object).

A damaged array file (truncated, not an array, a field missing, another shape) is a DataError
naming it and what rebuilds it (`redo`), never a traceback from numpy or zipfile.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kit.errors import DataError

# What np.load raises on a truncated or garbled file (zip, .npy header or pickle refused).
_DAMAGED = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error)
Shape = Sequence[int | None]  # None: any length along that axis


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_npy(path: Path, shape: Shape, redo: str) -> np.ndarray:
    """The .npy array at `path`, refused unless it has `shape`."""
    if not path.is_file():
        raise DataError("missing", path=path, hint=redo)
    try:
        array = np.load(path)
    except _DAMAGED as exc:
        raise DataError(f"cannot read the array: {_reason(exc)}", path=path, hint=redo) from exc
    if not isinstance(array, np.ndarray):
        raise DataError("not a .npy array", path=path, hint=redo)
    check_shape(path, "the array", array, shape, redo)
    return array


def read_npz(path: Path, fields: Sequence[str], redo: str) -> dict[str, np.ndarray]:
    """Every one of `fields` of the .npz at `path`, read in full (so a damaged member fails
    here, not later)."""
    if not path.is_file():
        raise DataError("missing", path=path, hint=redo)
    try:
        z = np.load(path)
    except _DAMAGED as exc:
        raise DataError(f"cannot read the arrays: {_reason(exc)}", path=path, hint=redo) from exc
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise DataError("not an .npz archive", path=path, hint=redo)
    with z:
        missing = [name for name in fields if name not in z.files]
        if missing:
            raise DataError(f"lacks {', '.join(missing)}", path=path, hint=redo)
        try:
            return {name: np.asarray(z[name]) for name in fields}
        except _DAMAGED as exc:
            reason = _reason(exc)
            raise DataError(f"cannot read the arrays: {reason}", path=path, hint=redo) from exc


def check_shape(path: Path, name: str, array: np.ndarray, shape: Shape, redo: str) -> None:
    """`array` (called `name`, read from `path`) has `shape`, else a DataError."""
    fits = array.ndim == len(shape) and all(
        want is None or have == want for have, want in zip(array.shape, shape, strict=True)
    )
    if not fits:
        wanted = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise DataError(f"{name} has shape {array.shape}, not {wanted}", path=path, hint=redo)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """A stable content hash of a JSON-able object (for content-addressed artifacts)."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()
