"""Which runs a stack may use: complete, on the current folds file and data."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kit.competition import Competition
from kit.errors import KitError
from kit.provenance import STACKING_CODE, run_inputs
from kit.store import RunResult, list_runs, load_run


def run_group(comp: Competition, run: RunResult) -> str:
    """The family, plus the keypoint subset when the run predicts only some keypoints
    (a model of the "nose" subset competes with other nose models, not with full ones)."""
    family = str(run.manifest.family)
    keypoints = sorted(run.keypoints)
    if len(keypoints) == comp.num_keypoints:
        return family
    for name in comp.subsets:
        if sorted(comp.subset_indices(name)) == keypoints:
            return f"{family}[{name}]"
    return f"{family}[{len(keypoints)} keypoints]"


def run_problem(comp: Competition, run: RunResult, folds_sha: str, train_sha: str) -> str | None:
    """Why `run` cannot be stacked with the current folds and data, or None."""
    manifest = run.manifest
    run_folds = manifest.folds
    if not run_folds.get("complete", False):
        trained, total = run_folds.get("trained", []), run_folds.get("total", "?")
        return f"it trained {len(trained)} of {total} folds (its OOF does not cover every row)"
    if run_folds.get("sha256") != folds_sha:
        return "it was trained on another folds file"
    if manifest.data.get("train") != train_sha:
        return "it was trained on other cached data"
    return None


def select_runs(
    comp: Competition,
    run_ids: Iterable[str] | None = None,
    per_family: int = 2,
    warn: Callable[[str], None] | None = None,
    inputs: dict[str, Any] | None = None,
) -> list[RunResult]:
    """Named runs (each must be stackable), or the best `per_family` stackable runs of each
    family and keypoint subset. Runs trained on only some folds (tuning trials, quick runs) are
    passed over; runs of another folds file or other data are skipped with a warning.
    `inputs`: the current `run_inputs`, when the caller has them."""
    inputs = inputs or run_inputs(comp, STACKING_CODE)
    folds_sha, train_sha = inputs["folds"], inputs["data"]["train"]
    if run_ids is not None:
        runs = [load_run(comp, run_id) for run_id in run_ids]
        for run in runs:
            problem = run_problem(comp, run, folds_sha, train_sha)
            if problem:
                raise KitError(
                    f"cannot stack run {run.run_id}: {problem}",
                    hint=f"retrain it with `kit train {comp.name} ...`",
                )
        return runs
    chosen: dict[str, list[RunResult]] = {}
    for run in list_runs(comp):  # best first
        if not run.manifest.folds.get("complete", False):
            continue  # a tuning trial or a quick run: not meant for stacking
        problem = run_problem(comp, run, folds_sha, train_sha)
        if problem:
            if warn is not None:
                warn(f"skipping run {run.run_id}: {problem}")
            continue
        group = chosen.setdefault(run_group(comp, run), [])
        if len(group) < per_family:
            group.append(run)
    runs = [run for group in chosen.values() for run in group]
    if not runs:
        raise KitError(
            f"no finished runs of {comp.name} to stack",
            hint=f"train some first: `kit train {comp.name} MODEL` or `kit tune {comp.name}`",
        )
    return runs
