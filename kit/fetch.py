"""Fetch stage: Kaggle download or a local zip/folder -> verified raw files -> cached arrays.

Order of writes keeps earlier work safe: everything is unpacked and parsed in a staging folder
first; only a fully verified parse replaces the cache and the raw folder, and checksums.json
(the "up to date" record) is written last.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.data.unpack import extract_nested, extract_zip
from kit.errors import DataError, KitError
from kit.progress import Event, OnEvent, ignore
from kit.store.files import read_json, sha256_file
from kit.workspace import Workspace, write_json

_SOURCE_HINT = "give a competition zip or folder"
NO_KAGGLE_HINT = "give its files with --from PATH, a zip or folder"


@dataclass(frozen=True)
class FetchResult:
    status: str  # "fetched" or "up to date"
    source: Path
    train_rows: int
    test_rows: int
    complete_rows: int
    seconds: float


def _hash_files(folder: Path, paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(f"{path.relative_to(folder).as_posix()}\0{sha256_file(path)}\0".encode())
    return h.hexdigest()


def _hash_tree(folder: Path) -> str:
    return _hash_files(folder, [p for p in folder.rglob("*") if p.is_file()])


def source_fingerprint(source: Path) -> str:
    return _hash_tree(source) if source.is_dir() else sha256_file(source)


def parser_fingerprint(comp: Competition) -> str:
    """Changes when the competition's config or reader code changes, so the cache is rebuilt.
    Only sources count: Python writes __pycache__ beside plugin.py when it loads it."""
    sources = [p for p in comp.root.rglob("*") if p.suffix in {".py", ".toml"} and p.is_file()]
    return _hash_files(comp.root, sources)


def _stage(source: Path, staging: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, staging, dirs_exist_ok=True)
    elif source.is_file():
        extract_zip(source, staging)
    else:
        raise DataError("no such file or folder", path=source, hint=_SOURCE_HINT)
    extract_nested(staging, origin=source)


def _name_user_files(error: KitError, staging: Path, source: Path) -> None:
    """Make `error` name the user's files instead of kit's staging folder (a plug-in may name
    a file by its full path): `source/train.csv` for a folder, `train.csv in source` for a zip."""
    text = str(error)
    if str(staging) not in text:
        return

    def shown(match: re.Match[str]) -> str:
        member = match.group(1)
        if not member:
            return str(source)
        return str(source / member) if source.is_dir() else f"{member} in {source}"

    error.args = (re.sub(re.escape(str(staging)) + r"(?:[/\\]([^\s:,;()']*))?", shown, text),)


def _check_required(comp: Competition, raw: Path, source: Path) -> None:
    missing = [name for name in comp.plugin.required_files(comp) if not (raw / name).exists()]
    if missing:
        raise DataError(
            f"missing {', '.join(missing)} for {comp.name}",
            path=source,
            hint="is this the right competition's data?",
        )


def _is_up_to_date(ws: Workspace, fingerprint: dict[str, str]) -> bool:
    if not ws.checksums.is_file():
        return False
    record = read_json(ws.checksums)
    if record.get("fingerprint") != fingerprint:
        return False
    cache = record.get("cache", {})
    return all(
        path.is_file() and sha256_file(path) == cache.get(path.name)
        for path in (ws.train_npz, ws.test_npz)
    )


def _swap_in(staging: Path, raw: Path) -> None:
    old = raw.with_name(raw.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if raw.exists():
        raw.rename(old)
    staging.rename(raw)
    shutil.rmtree(old, ignore_errors=True)


def _counts(train: KeypointData, test: KeypointData) -> dict[str, int]:
    return {
        "train_rows": len(train),
        "test_rows": len(test),
        "complete_rows": int(np.count_nonzero(train.complete)),
    }


def fetch(
    comp: Competition,
    source: Path | None = None,
    force: bool = False,
    on_event: OnEvent = ignore,
) -> FetchResult:
    """Download (or take `source`), verify, and cache `comp`'s data under its work folder."""
    started = time.perf_counter()
    if source is None:  # before anything is written or the kaggle client is imported
        comp.require_kaggle("nothing to download", hint=NO_KAGGLE_HINT)
    ws = comp.workspace
    ws.root.mkdir(parents=True, exist_ok=True)
    if source is None:
        from kit import kaggle  # imported late: the kaggle client is slow and noisy to import

        on_event(Event("fetch", "step", text=f"downloading {comp.kaggle_slug} from Kaggle"))
        source = kaggle.download_competition_files(comp.kaggle_slug, ws.downloads, force=force)
    source = Path(source)
    if not source.exists():
        raise DataError("no such file or folder", path=source, hint=_SOURCE_HINT)

    on_event(Event("fetch", "step", text="checking checksums"))
    fingerprint = {"source": source_fingerprint(source), "parser": parser_fingerprint(comp)}
    if not force and _is_up_to_date(ws, fingerprint):
        counts = read_json(ws.checksums)["counts"]
        return FetchResult("up to date", source, seconds=time.perf_counter() - started, **counts)

    staging = Path(tempfile.mkdtemp(prefix=".raw-staging-", dir=ws.root))
    try:
        on_event(Event("fetch", "step", text=f"unpacking {source.name}"))
        _stage(source, staging)
        _check_required(comp, staging, source)
        on_event(Event("fetch", "step", text="parsing and verifying"))
        train, test = comp.plugin.load(staging, comp)
        on_event(Event("fetch", "step", text="writing the cache"))
        train.save(ws.train_npz)
        test.save(ws.test_npz)
        raw_sums = {
            p.relative_to(staging).as_posix(): sha256_file(p)
            for p in sorted(staging.rglob("*"))
            if p.is_file()
        }
        _swap_in(staging, ws.raw)
    except KitError as exc:
        _name_user_files(exc, staging, source)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    counts = _counts(train, test)
    write_json(
        ws.checksums,
        {
            "fingerprint": fingerprint,
            "source": str(source),
            "raw": raw_sums,
            "cache": {p.name: sha256_file(p) for p in (ws.train_npz, ws.test_npz)},
            "counts": counts,
        },
    )
    return FetchResult("fetched", source, seconds=time.perf_counter() - started, **counts)
