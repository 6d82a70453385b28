"""`kit pseudo` as a library call: a teacher's predictions fill the labels the data lacks.

Normal set: a training row's missing keypoint takes the teacher's OOF prediction, the test rows
take its test predictions. That leaks: the OOF of a row in fold j came from the teacher's fold-j
model, which trained on every other fold, fold k included; so a student's fold k trains on
labels that carry what the teacher learnt from fold k's truth, and the student's fold-k score
reads optimistic. The same holds for the test predictions (the mean of every fold's model).

Strict set (``strict=True``): one block of labels per fold. Block k comes from the teacher's
fold-k model alone, which never saw fold k's rows: it predicts every training and test row,
and student fold k trains on block k. For a run teacher that model is its ``fold-<k>.pt``;
for a stack teacher, the mean (per keypoint) of its base runs' fold-k models: the stack's
meta-learner is not used, as it was fitted on every fold's OOF. The strict CV minus the normal
CV of the same student measures the leak.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import kit
from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import DataError, KitError
from kit.progress import Event, OnEvent, ignore
from kit.provenance import PSEUDO_CODE, git_commit, run_inputs
from kit.store import RunResult, load_run
from kit.store.manifests import PseudoManifest
from kit.store.pseudo import (
    MANIFEST,
    NONE,
    PSEUDO,
    TRUE,
    PseudoResult,
    load_pseudo,
    make_pseudo_id,
    write_pseudo,
)
from kit.submit import Source, list_sources, resolve_source
from kit.training.checkpoint import fold_predictions
from kit.training.device import configure_cpu_threads, device_images, resolve_device
from kit.training.sources import Routing, route
from kit.training.targets import TargetPlan


def make_pseudo_labels(
    comp: Competition,
    teacher: str | Path | None = None,
    *,
    strict: bool = False,
    device: str | None = None,
    on_event: OnEvent = ignore,
) -> PseudoResult:
    """Write the pseudo-label set of `teacher` (a run or stack id, unique prefix or folder;
    default: the best-CV stack, else the best-CV run, that predicts every keypoint, trained on
    every fold of the current folds file and data). `strict`: per-fold labels from the
    teacher's fold models (see the module's docstring). `device` runs those (default: auto).
    The same teacher, strictness, data, folds and code give the same set, reused."""
    started = time.perf_counter()
    inputs = run_inputs(comp, PSEUDO_CODE)
    source = resolve_teacher(comp, teacher, inputs)
    pseudo_id = make_pseudo_id(source.id, strict, inputs)
    path = comp.workspace.pseudo / pseudo_id
    if (path / MANIFEST).is_file():
        return load_pseudo(comp, pseudo_id)
    kind = "strict " if strict else ""
    on_event(Event("pseudo", "start", text=f"{kind}pseudo labels from {source.kind} {source.id}"))
    data = KeypointData.load(comp.workspace.train_npz)
    test = KeypointData.load(comp.workspace.test_npz)
    folds = _load_folds(comp, data)
    if strict:
        train_pred, test_pred, method = strict_predictions(
            comp, source, data, test, int(folds.max()) + 1, device, on_event
        )
    else:
        train_pred = widen(source.saved.oof, source.keypoints, comp.num_keypoints)
        test_pred = widen(source.test, source.keypoints, comp.num_keypoints)
        method = _normal_method(source)
    if train_pred.shape[-3] != len(data) or test_pred.shape[-3] != len(test):
        raise DataError(
            f"{source.kind} {source.id} predicted {train_pred.shape[-3]} training and "
            f"{test_pred.shape[-3]} test rows; the cache has {len(data)} and {len(test)}",
            path=source.path,
            hint="retrain the teacher on the current data",
        )
    labels, source_mask = fill_labels(data.keypoints, train_pred)
    manifest = _manifest(
        comp, pseudo_id, source, strict, method, source_mask, test_pred, folds, inputs, started
    )
    path.mkdir(parents=True, exist_ok=True)
    write_pseudo(path, labels, source_mask, test_pred, manifest)
    counts = manifest.counts
    on_event(
        Event(
            "pseudo",
            "done",
            text=f"{pseudo_id}: {counts['train_pseudo']} training keypoints and "
            f"{counts['test_pseudo']} test keypoints pseudo-labelled",
        )
    )
    return load_pseudo(comp, pseudo_id, reused=False)


# ------------------------------------------------------------------------- the teacher


def teacher_problem(source: Source, inputs: dict[str, Any]) -> str | None:
    """Why `source` cannot teach on the current data and folds (`run_inputs`), or None."""
    manifest = source.manifest
    if not source.complete:
        trained, total = manifest.folds.get("trained", []), manifest.folds.get("total", "?")
        return f"it trained {len(trained)} of {total} folds (its OOF does not cover every row)"
    if manifest.folds.get("sha256") != inputs["folds"]:
        return "it was trained on another folds file"
    if any(manifest.data.get(split) != inputs["data"][split] for split in ("train", "test")):
        return "it was trained on other cached data"
    return None


def resolve_teacher(comp: Competition, teacher: str | Path | None, inputs: dict) -> Source:
    """The named run or stack (as `kit submit --from` names it), checked; or the default:
    the best-CV stack, else the best-CV run, that predicts every keypoint and can teach."""
    if teacher is not None:
        source = resolve_source(comp, teacher)
        problem = teacher_problem(source, inputs)
        if problem:
            raise KitError(
                f"{source.kind} {source.id} cannot teach: {problem}",
                hint=f"retrain it on the current data and folds of {comp.name}, or pick another",
            )
        return source
    everything = list(range(comp.num_keypoints))
    usable = [
        s
        for s in list_sources(comp)  # best CV first
        if s.covers(everything) and teacher_problem(s, inputs) is None
    ]
    if not usable:
        raise KitError(
            f"no finished run or stack of {comp.name} predicts every keypoint on the current "
            "data and folds",
            hint=f"train one (`kit train {comp.name} MODEL`, `kit stack {comp.name}`) "
            "or give --teacher",
        )
    stacks = [s for s in usable if s.kind == "stack"]
    return (stacks or usable)[0]


def _normal_method(source: Source) -> str:
    if source.kind == "stack":
        return (
            f"the OOF of stack {source.id} where the truth is missing; its test predictions "
            "(leaky: the base runs' fold models saw the other folds, see `--strict`)"
        )
    return (
        f"the OOF of run {source.id} where the truth is missing; its test predictions, the "
        "mean of its fold models (leaky: each fold model saw the other folds, see `--strict`)"
    )


# ------------------------------------------------------------------------- the labels


def widen(array: np.ndarray, keypoints: list[int], num_keypoints: int) -> np.ndarray:
    """(..., N, K', 2) columns of `keypoints` -> (..., N, K, 2) with NaN elsewhere."""
    out = np.full((*array.shape[:-2], num_keypoints, 2), np.nan, np.float32)
    out[..., list(keypoints), :] = array
    return out


def fill_labels(truth: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels = the truth (N, K, 2) where present, else `predictions` ((N, K, 2) or per fold
    (F, N, K, 2)) where finite, else NaN; and the (N, K) source: 1 true, 0 pseudo, -1 neither
    (a keypoint counts as pseudo only where every fold's prediction is finite)."""
    present = np.isfinite(truth).all(axis=-1)
    predicted = np.isfinite(predictions).all(axis=-1)
    if predicted.ndim == 3:
        predicted = predicted.all(axis=0)
    pseudo = ~present & predicted
    labels = np.where(present[..., None], truth, np.nan)
    labels = np.where(pseudo[..., None], predictions, labels).astype(np.float32)
    source = np.where(present, TRUE, np.where(predicted, PSEUDO, NONE)).astype(np.int8)
    return labels, source


def strict_predictions(
    comp: Competition,
    source: Source,
    data: KeypointData,
    test: KeypointData,
    n_folds: int,
    device: str | None = None,
    on_event: OnEvent = ignore,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(F, N, K, 2) and (F, M, K, 2): block k is what the teacher's fold-k model(s) predict for
    every training and test row (a stack: the mean of its base runs' fold-k models), and the
    method in words."""
    if source.kind == "run":
        assert isinstance(source.saved, RunResult)
        runs = [source.saved]
        method = f"fold k: run {source.id}'s fold-k model, which never saw fold k's rows"
    else:
        runs = [load_run(comp, run_id) for run_id in source.run_ids]
        method = (
            f"fold k: the mean of the fold-k models of stack {source.id}'s base runs "
            f"({', '.join(r.run_id for r in runs)}), which never saw fold k's rows; "
            "not the stack's meta-learner, which was fitted on every fold's OOF"
        )
    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        configure_cpu_threads()
    images = device_images(data.images, torch_device)
    test_images = device_images(test.images, torch_device)
    routings = {run.run_id: _routing(comp, run, data, test) for run in runs}
    k = comp.num_keypoints
    train_out = np.full((n_folds, len(data), k, 2), np.nan, np.float32)
    test_out = np.full((n_folds, len(test), k, 2), np.nan, np.float32)
    for fold in range(n_folds):
        train_sum = np.zeros((len(data), k, 2))
        test_sum = np.zeros((len(test), k, 2))
        count = np.zeros(k)
        for run in runs:
            train_pred, test_pred = fold_model_predictions(
                comp, run, fold, images, test_images, torch_device, routings[run.run_id]
            )
            cols = list(run.keypoints)
            train_sum[:, cols] += train_pred
            test_sum[:, cols] += test_pred
            count[cols] += 1
        used = count > 0
        train_out[fold][:, used] = train_sum[:, used] / count[used, None]
        test_out[fold][:, used] = test_sum[:, used] / count[used, None]
        text = f"fold {fold}: the teacher's fold-{fold} model predicted every row"
        on_event(Event("pseudo", "fold", fold + 1, n_folds, text))
    return train_out, test_out, method


def _routing(
    comp: Competition, run: RunResult, data: KeypointData, test: KeypointData
) -> Routing | None:
    """The label source of every row, for a run with one head per source (else None)."""
    heads = TargetPlan.from_description(run.manifest.plan).heads
    return None if heads is None else route(comp, heads, data, test)


def fold_model_predictions(
    comp: Competition,
    run: RunResult,
    fold: int,
    images: torch.Tensor,
    test_images: torch.Tensor,
    device: torch.device,
    routing: Routing | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """What `run`'s fold-`fold` checkpoint predicts for all of `images` and `test_images`,
    (N, K', 2) and (M, K', 2) in the run's keypoint columns (kit.training.runs.
    fold_predictions; a run with heads needs the `routing` of those rows)."""
    train_sources, test_sources = (None, None) if routing is None else (routing.train, routing.test)
    train, test = fold_predictions(
        comp, run, fold, device, (images, train_sources), (test_images, test_sources)
    )
    return train, test


# ------------------------------------------------------------------------- the record


def _load_folds(comp: Competition, data: KeypointData) -> np.ndarray:
    from kit.data.folds import load_folds  # the folds stage owns the file format

    return np.asarray(load_folds(comp, data), np.int64)


def _manifest(
    comp: Competition,
    pseudo_id: str,
    source: Source,
    strict: bool,
    method: str,
    source_mask: np.ndarray,
    test_pred: np.ndarray,
    folds: np.ndarray,
    inputs: dict[str, Any],
    started: float,
) -> PseudoManifest:
    test_labelled = np.isfinite(test_pred).all(axis=-1)
    if test_labelled.ndim == 3:
        test_labelled = test_labelled.all(axis=0)
    return PseudoManifest(
        pseudo_id=pseudo_id,
        competition=comp.name,
        teacher=source.describe(),
        teacher_cv=source.cv_score,
        strict=strict,
        method=method,
        metric=comp.metric,
        keypoints=list(comp.keypoint_names),
        counts={
            "train_rows": len(source_mask),
            "test_rows": len(test_labelled),
            "train_true": int((source_mask == TRUE).sum()),
            "train_pseudo": int((source_mask == PSEUDO).sum()),
            "train_none": int((source_mask == NONE).sum()),
            "test_pseudo": int(test_labelled.sum()),
            "test_none": int((~test_labelled).sum()),
        },
        folds={
            "file": str(comp.workspace.folds_csv),
            "sha256": inputs["folds"],
            "total": int(folds.max()) + 1,
        },
        data={**inputs["data"], "train_rows": len(source_mask), "test_rows": len(test_labelled)},
        code_sha256=inputs["code"],
        seconds=time.perf_counter() - started,
        kit=kit.__version__,
        git_commit=git_commit(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
