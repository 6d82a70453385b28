"""A fold's files: the `.pt` checkpoint (this file writes it and reads it back), its `.npz`
predictions, and its done marker last; and what a fold's checkpoint predicts for new images
(`kit predict`, `kit pseudo`), without the training loop.

A checkpoint holds ``format``, ``family``, ``model_hparams``, ``input_size``, ``fold`` and
``submodels``: name -> ``keypoints``, ``outputs`` (the network's keypoints; heads: all blocks)
and ``state_dict``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kit.competition import Competition
from kit.errors import DataError
from kit.store.files import check_shape, read_npz
from kit.store.runs import RUN_FORMAT, FoldRecord, RunFolder, RunResult
from kit.training.config import RunConfig, run_speed
from kit.training.flip import flip_permutation
from kit.training.predict import predict_rows
from kit.training.targets import TargetPlan
from kit.workspace import atomic_path


@dataclass(frozen=True)
class TrainedSubmodel:
    """One trained network of a fold: the keypoints it predicts, its outputs, its weights."""

    keypoints: tuple[int, ...]
    outputs: int
    state_dict: dict[str, torch.Tensor]


@dataclass(frozen=True)
class FoldArrays:
    """A fold's predictions: its validation rows' OOF and every test row."""

    rows: np.ndarray
    oof: np.ndarray
    test: np.ndarray


def save_fold(
    folder: RunFolder,
    config: RunConfig,
    input_size: int,
    submodels: dict[str, TrainedSubmodel],
    arrays: FoldArrays,
    record: FoldRecord,
) -> None:
    """The checkpoint, the arrays, then the done marker (last: the fold now counts as done)."""
    fold = record.fold
    checkpoint = {
        "format": RUN_FORMAT,
        "family": config.family,
        "model_hparams": config.model,
        "input_size": input_size,
        "fold": fold,
        "submodels": {
            name: {
                "keypoints": list(sub.keypoints),
                "outputs": sub.outputs,
                "state_dict": sub.state_dict,
            }
            for name, sub in submodels.items()
        },
    }
    with atomic_path(folder.checkpoint(fold)) as tmp:
        torch.save(checkpoint, tmp)
    with atomic_path(folder.arrays(fold)) as tmp, open(tmp, "wb") as f:
        np.savez(f, rows=arrays.rows, oof=arrays.oof, test=arrays.test)
    folder.write_fold_record(record)


def load_fold_arrays(folder: RunFolder, fold: int) -> FoldArrays:
    """A done fold's predictions, checked: a damaged file is a DataError naming it."""
    path = folder.arrays(fold)
    redo = retrain_fold(folder, fold)
    z = read_npz(path, ("rows", "oof", "test"), redo)
    check_shape(path, "rows", z["rows"], (None,), redo)
    check_shape(path, "oof", z["oof"], (len(z["rows"]), None, 2), redo)
    check_shape(path, "test", z["test"], (None, z["oof"].shape[1], 2), redo)
    return FoldArrays(z["rows"], z["oof"], z["test"])


def retrain_fold(folder: RunFolder, fold: int) -> str:
    """What trains a damaged fold again: without its done marker the fold is not done."""
    return f"delete {folder.marker(fold)} and rerun `kit train` with the run's settings"


def load_fold_model(
    run_path: Path,
    fold: int,
    submodel: str = "main",
    device: str = "cpu",
    hparams: dict[str, Any] | None = None,
):
    """Rebuild one fold's trained network from its checkpoint (eval mode); `hparams` replace
    model settings that hold no weights (e.g. ``{"decode": "dark"}`` for a heatmap model)."""
    from kit.models import create_model

    folder = RunFolder(run_path)
    checkpoint = _read_checkpoint(folder, fold, device)
    sub = checkpoint["submodels"][submodel]
    model = create_model(
        checkpoint["family"],
        int(sub.get("outputs", len(sub["keypoints"]))),
        checkpoint["input_size"],
        **{**checkpoint["model_hparams"], **(hparams or {})},
    )
    model.load_state_dict(sub["state_dict"])
    return model.to(device).eval()


def _read_checkpoint(folder: RunFolder, fold: int, device: str) -> dict[str, Any]:
    """fold-<k>.pt as saved by `save_fold`; a truncated or foreign file is a DataError."""
    path = folder.checkpoint(fold)
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"cannot read the checkpoint: {reason}", path=path, hint=retrain_fold(folder, fold)
        ) from exc
    keys = ("family", "model_hparams", "input_size", "submodels")
    if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in keys):
        raise DataError("not a kit checkpoint", path=path, hint=retrain_fold(folder, fold))
    return checkpoint


@torch.no_grad()
def fold_predictions(
    comp: Competition,
    run: RunResult,
    fold: int,
    device: torch.device,
    *splits: tuple[torch.Tensor, np.ndarray | None],
) -> list[np.ndarray]:
    """What `run`'s fold-`fold` checkpoint predicts for each split's images (device uint8
    (n, 1, S, S)): (n, K', 2) input pixels in the run's keypoint columns, as its training
    predicted its test rows: its sub-models merged, flip TTA when the run used it. A split is
    (images, sources): a run with heads (target set sources) needs each row's source ((n,) head
    indices), else None. Each sub-model is loaded once for all the splits."""
    checkpoint = run.folder.checkpoint(fold)
    if not checkpoint.is_file():
        raise DataError(
            f"run {run.run_id} has no model of fold {fold}",
            path=checkpoint,
            hint=f"retrain it: `kit train {comp.name} {run.manifest.family} ...`",
        )
    config = RunConfig(**run.manifest.config)
    plan = TargetPlan.from_description(run.manifest.plan)
    speed = run_speed(config, device)
    batch = int(config.train.get("eval_batch_size", 256))
    parts: list[dict[str, np.ndarray]] = [{} for _ in splits]
    for sub in plan.submodels:
        model = load_fold_model(run.path, fold, sub.name, str(device))
        perm = flip_permutation(comp, sub.columns) if config.train.get("tta", True) else None
        for split_parts, (images, sources) in zip(parts, splits, strict=True):
            pred = predict_rows(
                model, images, None, device, batch_size=batch, flip_perm=perm, speed=speed
            )
            split_parts[sub.name] = sub.pick(pred, sources)
    return [plan.merge(split_parts) for split_parts in parts]
