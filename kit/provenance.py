"""Where a result came from: checksums of the inputs it was computed from, and the git commit.

`run_inputs` is computed once per `train_run` or `stack` call; its checksums are hashed into the
run or stack id (so changed data, folds or code give a new id instead of a stale result) and
written into the manifest.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import kit
from kit.competition import Competition
from kit.errors import DataError
from kit.store.files import sha256_file


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(kit.__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def data_checksums(comp: Competition) -> dict[str, str]:
    ws = comp.workspace
    for path in (ws.train_npz, ws.test_npz):
        if not path.is_file():
            raise DataError("no cached arrays", path=path, hint=f"run `kit fetch {comp.name}`")
    return {"train": sha256_file(ws.train_npz), "test": sha256_file(ws.test_npz)}


def folds_checksum(comp: Competition) -> str:
    path = comp.workspace.folds_csv
    if not path.is_file():
        raise DataError("no folds file", path=path, hint=f"run `kit folds {comp.name}`")
    return sha256_file(path)


# The code that decides what a run learns and predicts, or a stack combines, relative to the kit
# package; with the competition's own competition.toml and plugin it is hashed into the ids.
TRAINING_CODE = ("models", "training", "metrics.py", "data/arrays.py")
STACKING_CODE = ("stack", "metrics.py", "data/arrays.py")
PSEUDO_CODE = (*TRAINING_CODE, "pseudo")  # strict sets predict with the teacher's fold models


def code_checksum(comp: Competition, code: tuple[str, ...] = TRAINING_CODE) -> str:
    """sha256 over the files of `code` (names and bytes), kit's and the competition's."""
    package = Path(kit.__file__).parent
    files: list[Path] = []
    for entry in code:
        path = package / entry
        files += sorted(path.glob("*.py")) if path.is_dir() else [path]
    own = [comp.root / "competition.toml", comp.root / comp.module_file]
    files += [path for path in own if path.is_file()]  # training can run from the cache alone
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def run_inputs(comp: Competition, code: tuple[str, ...] = TRAINING_CODE) -> dict[str, Any]:
    """What a run (or, with STACKING_CODE, a stack) is computed from besides its settings, as
    checksums: the cached arrays ("data"), the folds file ("folds") and the code ("code")."""
    return {
        "data": data_checksums(comp),
        "folds": folds_checksum(comp),
        "code": code_checksum(comp, code),
    }
