"""`stack()`: writes content-addressed stack folders (their reader: kit.store.stacks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np

import kit
from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.progress import OnEvent, ignore
from kit.provenance import STACKING_CODE, git_commit, run_inputs
from kit.stack.bases import BaseModel
from kit.stack.boosting import LIGHTGBM_DEFAULTS, StackSettings
from kit.stack.meta import StackOutcome, stack_predictions
from kit.stack.nested import MIN_META_ROWS
from kit.stack.picking import PICKED
from kit.stack.selection import run_group, select_runs
from kit.store import RunResult
from kit.store.files import sha256_json
from kit.store.manifests import StackManifest
from kit.store.meta_models import meta_model_problem, write_meta_models
from kit.store.stacks import StackResult, load_stack
from kit.workspace import atomic_path, write_text

STACK_FORMAT = 3  # bump when the artifacts' meaning changes: old stacks then get new ids


def make_stack_id(runs: list[RunResult], settings: StackSettings, inputs: dict[str, Any]) -> str:
    """The stack's content address: its runs, settings, data, folds and stacking code."""
    identity = {
        "format": STACK_FORMAT,
        "runs": sorted(r.run_id for r in runs),
        "features": sorted(settings.features),
        "lightgbm": settings.lightgbm,
        **inputs,
    }
    return f"stack-{sha256_json(identity)[:12]}"


def stack(
    comp: Competition,
    runs: list[RunResult] | None = None,
    *,
    per_family: int = 2,
    features: Iterable[str] = frozenset(),
    on_event: OnEvent = ignore,
    warn: Callable[[str], None] | None = None,
    lightgbm_params: dict[str, Any] | None = None,
) -> StackResult:
    """Stack `runs` (default: the best `per_family` runs per family) and write the artifacts.

    The same runs, features and data give the same stack id, and a finished stack is reused
    (fitted again when its saved meta-models are damaged).
    """
    from kit.data.folds import load_folds  # the folds stage owns the file format

    started = time.perf_counter()
    settings = StackSettings(
        features=frozenset(features), lightgbm={**LIGHTGBM_DEFAULTS, **(lightgbm_params or {})}
    )
    inputs = run_inputs(comp, STACKING_CODE)  # once: ids, checks and manifest share it
    if runs is None:
        runs = select_runs(comp, per_family=per_family, warn=warn, inputs=inputs)
    else:
        runs = select_runs(comp, [r.run_id for r in runs], inputs=inputs)
    stack_id = make_stack_id(runs, settings, inputs)
    path = comp.workspace.stacks / stack_id
    if (path / "manifest.json").is_file():
        found = load_stack(comp, stack_id)
        problem = meta_model_problem(found)
        if problem is None:
            return found
        if warn is not None:
            warn(f"{problem}: fitting the stack again")

    data = KeypointData.load(comp.workspace.train_npz)
    test = KeypointData.load(comp.workspace.test_npz)
    folds = load_folds(comp, data)
    bases = [BaseModel.from_run(comp, run) for run in runs]
    outcome = stack_predictions(comp, data, test.images, folds, bases, settings, on_event)
    _write_stack(comp, path, stack_id, runs, settings, inputs, outcome, started)
    return load_stack(comp, stack_id, reused=False)


def _write_stack(comp, path, stack_id, runs, settings, inputs, outcome: StackOutcome, started):
    cols = outcome.keypoints
    with atomic_path(path / "oof.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, outcome.picked_oof[:, cols].astype(np.float32))
    with atomic_path(path / "test.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, outcome.picked_test[:, cols].astype(np.float32))
    arrays = {f"oof/{m}": a[:, cols] for m, a in outcome.oof.items()}
    arrays |= {f"test/{m}": a[:, cols] for m, a in outcome.test.items()}
    with atomic_path(path / "candidates.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **{k: v.astype(np.float32) for k, v in arrays.items()})
    write_text(path / "table.csv", outcome.table.to_csv(index=False))
    assert outcome.fitted is not None
    meta_models = write_meta_models(path, outcome.fitted.export())
    picked = outcome.scores[PICKED]
    manifest = StackManifest(
        stack_id=stack_id,
        competition=comp.name,
        metric=comp.metric,
        runs=[
            {
                "run_id": r.run_id,
                "family": r.manifest.family,
                "group": run_group(comp, r),
                "keypoints": [comp.keypoint_names[k] for k in r.keypoints],
                "cv": r.cv_score,
            }
            for r in runs
        ],
        features=sorted(settings.features),
        lightgbm=settings.lightgbm,
        keypoints=[comp.keypoint_names[k] for k in cols],
        keypoint_indices=cols,
        picks=outcome.picks,
        picks_per_fold={str(f): p for f, p in outcome.picks_per_fold.items()},
        best_single=outcome.best_single,
        cv=picked,
        methods=outcome.scores,
        ridge_weights=outcome.ridge_weights,
        fallbacks_to_blend=outcome.fallbacks,
        lightgbm_rounds=outcome.rounds,
        min_meta_rows=MIN_META_ROWS,
        folds={"file": str(comp.workspace.folds_csv), "sha256": inputs["folds"]},
        data=inputs["data"],
        code_sha256=inputs["code"],
        seconds=time.perf_counter() - started,
        kit=kit.__version__,
        lightgbm_version=_lightgbm_version(),
        meta_models=meta_models,
        git_commit=git_commit(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    manifest.write(path / "manifest.json")  # last: the stack now counts as finished


def _lightgbm_version() -> str:
    import lightgbm

    return lightgbm.__version__
