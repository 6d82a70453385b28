"""Safe zip extraction: no absolute paths, no `..`, no links, no zip bombs, no truncated files,
and no member that silently replaces another.

Errors name the archive as the user knows it (`shown`): the --from path or the downloaded file,
and for a zip inside it `training.zip in /path/to/data.zip`, never kit's staging folder.
"""

from __future__ import annotations

import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from kit.errors import DataError

MAX_TOTAL_BYTES = 8 << 30  # far above any keypoint competition (FKD unpacks to ~300 MB)
MAX_RATIO = 250  # CSV of pixel ints compresses ~4x; a ratio this high means a zip bomb
LISTED_MEMBERS = 6  # members a message names before "and N more"
REZIP = "rezip it with the competition's files only, each once"


def _safe_member_path(info: zipfile.ZipInfo, shown: str | Path) -> PurePosixPath:
    name = PurePosixPath(info.filename.replace("\\", "/"))
    if name.is_absolute() or ".." in name.parts or (name.parts and ":" in name.parts[0]):
        raise DataError(f"unsafe entry {info.filename!r} (absolute or '..' path)", path=shown)
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        raise DataError(f"unsafe entry {info.filename!r} (symbolic link)", path=shown)
    return name


def _check_sizes(infos: list[zipfile.ZipInfo], shown: str | Path) -> None:
    total = sum(i.file_size for i in infos)
    if total > MAX_TOTAL_BYTES:
        raise DataError(f"unpacks to {total / 2**30:.1f} GiB, over the 8 GiB limit", path=shown)
    for info in infos:
        if info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise DataError(
                f"entry {info.filename!r} has an absurd compression ratio (zip bomb?)",
                path=shown,
            )


def members_text(names: list[str]) -> str:
    """`training.csv, test.csv`, or the first few `and N more`."""
    listed = ", ".join(names[:LISTED_MEMBERS])
    more = len(names) - LISTED_MEMBERS
    return f"{listed} and {more} more" if more > 0 else listed


def _check_members(
    infos: list[zipfile.ZipInfo], members: list[PurePosixPath], dest: Path, shown: str | Path
) -> None:
    """Refuse a member set that is ambiguous: two members that unpack to one file (the same
    name twice, or names that differ only in case), or a member that would replace a different
    file already unpacked in `dest` (a training.zip whose test.csv replaces the real one). The
    same file again (a folder holding training.zip and its own training.csv) is no conflict."""
    names = [m.as_posix() for m in members]
    seen: dict[str, str] = {}
    for name in names:
        if (twin := seen.get(name.casefold())) is not None:
            raise DataError(
                f"ambiguous members: {twin} and {name} unpack to the same file "
                f"(members: {members_text(names)})",
                path=shown,
                hint=REZIP,
            )
        seen[name.casefold()] = name
    for info, member, name in zip(infos, members, names, strict=True):
        target = dest.joinpath(*member.parts)
        if target.exists() and not _same_content(target, info):
            raise DataError(
                f"ambiguous members: its {name} would replace another {name} already "
                f"unpacked beside it (members: {members_text(names)})",
                path=shown,
                hint=REZIP,
            )


def _same_content(path: Path, info: zipfile.ZipInfo) -> bool:
    """Whether the file at `path` is the member `info` (size, then CRC-32 as the zip has it)."""
    if not path.is_file() or path.stat().st_size != info.file_size:
        return False
    crc = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc == info.CRC


def extract_zip(archive: Path, dest: Path, shown: str | Path | None = None) -> list[Path]:
    """Extract `archive` into `dest` safely; returns the files written. Errors name it
    `shown` (default: its path)."""
    shown = archive if shown is None else shown
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            _check_sizes(infos, shown)
            members = [_safe_member_path(info, shown) for info in infos]
            _check_members(infos, members, dest, shown)
            written = []
            for info, member in zip(infos, members, strict=True):
                target = dest.joinpath(*member.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                written.append(target)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise DataError(
            f"not a valid zip ({exc}); the file is truncated or corrupt",
            path=shown,
            hint="download it again, e.g. `kit fetch --force`",
        ) from exc
    except OSError as exc:
        raise DataError(f"cannot unpack: {exc.strerror or exc}", path=shown) from exc
    return written


def _check_wrapper(inner: Path, shown: str | Path) -> None:
    """A zip named for one file (Kaggle's training.zip around training.csv) holds that file
    alone: anything beside it is a member set nobody can read one way (which test.csv?)."""
    namesake = inner.name.removesuffix(".zip")
    try:
        with zipfile.ZipFile(inner) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, OSError):
        return  # extract_zip says what is wrong with it
    names = [i.filename for i in infos if not i.is_dir() and not _is_junk(i.filename)]
    own = next((name for name in names if _named(name, namesake)), None)
    if own is not None and len(names) > 1:
        raise DataError(
            f"ambiguous members: {len(names)} files ({members_text(names)}) in a zip named "
            f"for {own}",
            path=shown,
            hint=f"rezip it with {own} alone",
        )


def _named(member: str, namesake: str) -> bool:
    path = PurePosixPath(member)
    return namesake in (path.name, path.stem)


def _is_junk(name: str) -> bool:
    """What macOS adds to a zip it makes: resource forks and folder settings."""
    path = PurePosixPath(name)
    return path.parts[0] == "__MACOSX" or path.name == ".DS_Store"


def extract_nested(folder: Path, origin: Path | None = None) -> None:
    """Unpack every *.zip inside `folder` beside itself (Kaggle ships training.zip inside the
    competition zip), then delete the inner zip. Goes one level deep, which is all Kaggle uses.

    `origin` is what `folder` was unpacked or copied from, so that errors name the user's file:
    `origin/training.zip` for a folder, `training.zip in origin` for an archive."""
    for inner in sorted(folder.rglob("*.zip")):
        shown = nested_name(inner, folder, origin)
        _check_wrapper(inner, shown)
        extract_zip(inner, inner.parent, shown)
        inner.unlink()


def nested_name(inner: Path, folder: Path, origin: Path | None) -> str | Path:
    """How an error names a zip found inside `folder` (which holds `origin`'s files)."""
    relative = inner.relative_to(folder)
    if origin is None:
        return inner
    return origin / relative if origin.is_dir() else f"{relative.as_posix()} in {origin}"
