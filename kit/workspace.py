"""Where every stage's artifacts live, and atomic writes (readers: kit.store).

Layout of one competition's work folder (git-ignored)::

    work/<competition>/
      raw/              unpacked competition files (fetch)
      checksums.json    sha256 of every raw file and of the cache (fetch)
      cache/train.npz   cached arrays (fetch); cache/test.npz
      eda/              tables and contact sheets (eda)
      folds.csv         the ONE folds file: id,fold (folds)
      runs/<run-id>/    one trained configuration (train)
      stacks/<id>/      meta-learner artifacts (stack)
      pseudo/<id>/      a teacher's pseudo-label set (pseudo)
      predict/<stamp>/  keypoints of your own photos: keypoints.csv, a PNG each (predict)
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kit.errors import KitError

WORK_ENV = "KIT_WORK"
SUBMISSIONS_ENV = "KIT_SUBMISSIONS"
_UMASK = os.umask(0)
os.umask(_UMASK)


def work_root() -> Path:
    """The root of all work folders: $KIT_WORK, else ./work."""
    return Path(os.environ.get(WORK_ENV, "work"))


def submissions_dir(competition: str) -> Path:
    """Kept submissions and their manifests (tracked by you, unlike work folders):
    $KIT_SUBMISSIONS/<competition>, else ./submissions/<competition>."""
    return Path(os.environ.get(SUBMISSIONS_ENV, "submissions")) / competition


@dataclass(frozen=True)
class Workspace:
    """Known artifact paths for one competition."""

    root: Path

    @classmethod
    def for_competition(cls, name: str) -> Workspace:
        return cls(work_root() / name)

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def downloads(self) -> Path:
        return self.root / "downloads"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def train_npz(self) -> Path:
        return self.cache / "train.npz"

    @property
    def test_npz(self) -> Path:
        return self.cache / "test.npz"

    @property
    def checksums(self) -> Path:
        return self.root / "checksums.json"

    @property
    def eda(self) -> Path:
        return self.root / "eda"

    @property
    def folds_csv(self) -> Path:
        return self.root / "folds.csv"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def stacks(self) -> Path:
        return self.root / "stacks"

    @property
    def pseudo(self) -> Path:
        return self.root / "pseudo"

    @property
    def predict(self) -> Path:
        return self.root / "predict"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it over `path` only if the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Uncompressed .npz (fast to load), written atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- output paths, checked first
# A command checks where it will write before it does its work: a path that cannot be written
# fails in one line, not in a traceback after the work, and nothing existing is overwritten
# that the command did not write itself. Missing folders are created, as atomic_path does.


def check_output_folder(path: Path, option: str, keep: Sequence[str] = ()) -> None:
    """`path` (given as `option`) can be a folder to write in: it is one or can be made, and
    holds none of the files `keep` (which the command would overwrite)."""
    if path.exists() and not path.is_dir():
        raise KitError(f"{option} {path}: is a file, not a folder", hint="give a folder")
    _check_parents(path, option)
    there = [name for name in keep if (path / name).exists()]
    if there:
        raise KitError(
            f"{option} {path}: already holds {', '.join(there)}",
            hint="give a new or empty folder, or move those files",
        )


def check_output_file(path: Path, option: str) -> None:
    """`path` (given as `option`) can be written as a file: not a folder, its parents
    folders or makeable. The command's own output there is replaced (it is regenerated)."""
    if path.is_dir():
        raise KitError(f"{option} {path}: is a folder, not a file", hint="give a file name")
    _check_parents(path.parent, option)


def _check_parents(path: Path, option: str) -> None:
    """The nearest existing ancestor of `path` is a folder (else it cannot be made)."""
    for parent in [path, *path.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise KitError(f"{option} {path}: {parent} is a file, not a folder")
            return
