"""A stack's fitted meta-models on disk, beside its predictions in its folder:

    meta/meta-models.json        the structure (which fold model of which coordinate, the picks)
    meta/ridge.npz               every fold's ridge fit (x_mean, coef, intercept, penalty)
    meta/image-pca.npz           the image features' PCA (with the "image" features only)
    meta/lightgbm/<key>.txt      each fold's LightGBM booster, LightGBM's own model file

Each file is written atomically and its sha256 goes into the manifest's ``meta_models``
(``{"format": 1, "files": {path: sha256}}``), the manifest written last; reading verifies
every checksum. A stack written before the meta-models were saved has no such entry: `kit
predict` fits them once and saves them (`save_meta_models`). The store handles plain data
only (kit.stack.fitted turns it into models), so it imports neither LightGBM nor torch.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.errors import DataError
from kit.store.files import read_json
from kit.workspace import write_bytes, write_json

if TYPE_CHECKING:
    from kit.store.stacks import StackResult

META_DIR = "meta"
STRUCTURE = f"{META_DIR}/meta-models.json"
BOOSTERS = f"{META_DIR}/lightgbm"
FILES_FORMAT = 1
Json = dict[str, Any]


@dataclass
class MetaModels:
    """Fitted meta-models as plain data (kit.stack.fitted.FittedStack.export)."""

    structure: Json
    arrays: dict[str, dict[str, np.ndarray]]  # file stem -> arrays (one .npz each)
    texts: dict[str, str]  # booster key -> LightGBM model text (one .txt each)


def write_meta_models(folder: Path, models: MetaModels) -> Json:
    """Write `models` into the stack `folder`, each file atomically; the manifest's entry."""
    blobs = {STRUCTURE: json.dumps(models.structure, indent=1, sort_keys=True).encode()}
    for stem, arrays in models.arrays.items():
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        blobs[f"{META_DIR}/{stem}.npz"] = buf.getvalue()
    for key, text in models.texts.items():
        blobs[f"{BOOSTERS}/{key}.txt"] = text.encode()
    files = {}
    for rel, data in blobs.items():
        write_bytes(folder / rel, data)
        files[rel] = hashlib.sha256(data).hexdigest()
    return {"format": FILES_FORMAT, "files": files}


def read_meta_models(stack: StackResult) -> MetaModels | None:
    """The stack's saved meta-models, every checksum verified; None when it saved none (a
    stack written before they were saved). A missing or changed file is a DataError naming
    it and the command that rebuilds the stack."""
    files = saved_files(stack)
    if files is None:
        return None
    models = MetaModels({}, {}, {})
    for rel, sha in files.items():
        data, problem = _checked(stack, rel, sha)
        if problem is not None:
            raise DataError(
                f"stack {stack.stack_id}'s meta-model file {problem}",
                path=stack.path / rel,
                hint=f"rebuild the stack: `{rebuild_command(stack)}`",
            )
        _parse(models, rel, data)
    if not models.structure:
        raise DataError(f"stack {stack.stack_id}'s manifest lists no {STRUCTURE}", path=stack.path)
    return models


def meta_model_problem(stack: StackResult) -> str | None:
    """What is wrong with the stack's saved meta-model files (the first one found), or None
    when they are intact or were never saved."""
    for rel, sha in (saved_files(stack) or {}).items():
        _, problem = _checked(stack, rel, sha)
        if problem is not None:
            return f"stack {stack.stack_id}'s meta-model file {rel} {problem}"
    return None


def save_meta_models(stack: StackResult, models: MetaModels) -> StackResult:
    """Add `models` to a finished stack: the files, then its manifest's entry (atomically;
    the manifest's other fields are kept as they are on disk)."""
    entry = write_meta_models(stack.path, models)
    path = stack.path / "manifest.json"
    data = read_json(path)
    data["meta_models"] = entry
    write_json(path, data)
    return replace(stack, manifest=stack.manifest.replace(meta_models=entry))


def saved_files(stack: StackResult) -> dict[str, str] | None:
    """path in the stack's folder -> sha256 of each saved meta-model file; None: none saved."""
    files = (stack.manifest.meta_models or {}).get("files")
    return dict(files) if files else None


def rebuild_command(stack: StackResult) -> str:
    """The `kit stack` command that writes this stack again (the same runs and features)."""
    manifest = stack.manifest
    command = f"kit stack {manifest.competition} --runs {','.join(stack.run_ids)}"
    return command + (f" --features {','.join(manifest.features)}" if manifest.features else "")


def _checked(stack: StackResult, rel: str, sha: str) -> tuple[bytes, str | None]:
    """The file's bytes and what is wrong with it (None: it matches its checksum)."""
    parts = PurePosixPath(rel).parts
    if not parts or parts[0] != META_DIR or ".." in parts:
        return b"", "is outside the stack's meta/ folder"
    try:
        data = (stack.path / rel).read_bytes()
    except FileNotFoundError:
        return b"", "is missing"
    if hashlib.sha256(data).hexdigest() != sha:
        return data, "does not match its sha256 in manifest.json"
    return data, None


def _parse(models: MetaModels, rel: str, data: bytes) -> None:
    path = PurePosixPath(rel)
    if rel == STRUCTURE:
        models.structure = json.loads(data)
    elif path.suffix == ".npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            models.arrays[path.stem] = {key: npz[key] for key in npz.files}
    elif str(path.parent) == BOOSTERS:
        models.texts[path.stem] = data.decode()
