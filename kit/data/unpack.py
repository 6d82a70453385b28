"""Safe zip extraction: no absolute paths, no `..`, no links, no zip bombs, no truncated files."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path, PurePosixPath

from kit.errors import DataError

MAX_TOTAL_BYTES = 8 << 30  # far above any keypoint competition (FKD unpacks to ~300 MB)
MAX_RATIO = 250  # CSV of pixel ints compresses ~4x; a ratio this high means a zip bomb


def _safe_member_path(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath:
    name = PurePosixPath(info.filename.replace("\\", "/"))
    if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
        raise DataError(f"unsafe entry {info.filename!r} (absolute or '..' path)", path=archive)
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        raise DataError(f"unsafe entry {info.filename!r} (symbolic link)", path=archive)
    return name


def _check_sizes(infos: list[zipfile.ZipInfo], archive: Path) -> None:
    total = sum(i.file_size for i in infos)
    if total > MAX_TOTAL_BYTES:
        raise DataError(f"unpacks to {total / 2**30:.1f} GiB, over the 8 GiB limit", path=archive)
    for info in infos:
        if info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise DataError(
                f"entry {info.filename!r} has an absurd compression ratio (zip bomb?)",
                path=archive,
            )


def extract_zip(archive: Path, dest: Path) -> list[Path]:
    """Extract `archive` into `dest` safely; returns the files written."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            _check_sizes(infos, archive)
            written = []
            for info in infos:
                target = dest.joinpath(*_safe_member_path(info, archive).parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                written.append(target)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise DataError(
            f"not a valid zip ({exc}); the file is truncated or corrupt",
            path=archive,
            hint="download it again, e.g. `kit fetch --force`",
        ) from exc
    except OSError as exc:
        raise DataError(f"cannot unpack: {exc.strerror or exc}", path=archive) from exc
    return written


def extract_nested(folder: Path) -> None:
    """Unpack every *.zip inside `folder` beside itself (Kaggle ships training.zip inside the
    competition zip), then delete the inner zip. Goes one level deep, which is all Kaggle uses."""
    for inner in sorted(folder.rglob("*.zip")):
        extract_zip(inner, inner.parent)
        inner.unlink()
