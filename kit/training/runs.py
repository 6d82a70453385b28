"""`kit train` as a library call: open a run, train its folds through the fold queue, assemble
and finish it. Its folder's files are named by kit.store.RunFolder (where the layout and the run
id are described); one fold's training is kit.training.fold, its checkpoint format
kit.training.checkpoint.

`RunSpec` (kit.training.spec) is the only description of a run: `run_identity` turns it and the
work folder's data into the run id, for `open_run` and for the trial code alike.

With ``--target-set sources`` (kit.training.sources) the run routes each training row to its
label source's head by its labels and each test row by what the competition scores on it (the
plug-in's ``test_keypoints``, read from the fetched raw folder); the routing's checksum joins the
data checksums hashed into the run id, and oof.npy / test.npy keep their (N, K, 2) form.

With the train setting ``pseudo`` (a set of `kit pseudo`), each fold also trains on its
training rows' pseudo labels where the truth is missing and on the test rows' pseudo labels, at
``pseudo_weight`` (kit.training.targets.pseudo_targets); its OOF, test predictions and scores
keep their form, and validation uses the true labels only.

An interrupted run resumes at the first fold without a done marker. ``folds=K`` trains only
the first K folds of the folds file (a quick run): the partition itself never changes, the OOF
then covers those folds' rows only, and the CV score uses only predicted rows. A later run of
the same config with more folds reuses the finished ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import kit
from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.data.folds import load_folds
from kit.errors import DataError, KitError
from kit.metrics import evaluate, per_row_error
from kit.progress import Event, OnEvent, ignore
from kit.provenance import git_commit, run_inputs
from kit.store.manifests import RunManifest
from kit.store.pseudo import PseudoResult, load_pseudo
from kit.store.runs import FoldRecord, RunFolder, RunResult, make_run_id
from kit.training.checkpoint import load_fold_arrays
from kit.training.config import RunConfig, resolve_config
from kit.training.device import configure_cpu_threads, resolve_device
from kit.training.flip import check_flip
from kit.training.fold import RunContext, train_one_fold
from kit.training.oof import OofAssembler
from kit.training.parallel import FoldPool
from kit.training.plots import plot_curves, plot_worst
from kit.training.queue import FoldQueue, InProcessExecutor
from kit.training.sources import Routing, route
from kit.training.spec import RunSpec
from kit.training.targets import TargetPlan, plan_targets
from kit.workspace import atomic_path, write_json

__all__ = [
    "FoldEvent",
    "OpenRun",
    "RunIdentity",
    "RunSpec",
    "finish_run",
    "open_run",
    "run_identity",
    "train_fold",
    "train_run",
]


@dataclass
class FoldEvent:
    """Progress of one fold: status "start", "resumed" (found done) or "done". `run`: the run
    id (folds of several runs train at once in `kit run`'s workers)."""

    fold: int
    folds: int
    status: str
    score: float | None = None
    seconds: float = 0.0
    run: str = ""

    def event(self) -> Event:
        text = f"fold {self.fold}/{self.folds} {self.status}"
        if self.score is not None:
            text += f": {self.score:.4f} in {self.seconds:.0f} s"
        return Event("train", "fold", self.fold, self.folds, text, self)


# ---------------------------------------------------------------- a run's identity


@dataclass(frozen=True)
class RunIdentity:
    """What a spec resolves to on this work folder: its config, target plan, the inputs hashed
    into its id (with the routing's checksum when the plan has heads), and the id."""

    config: RunConfig
    plan: TargetPlan
    inputs: dict[str, Any]
    run_id: str
    data: KeypointData
    folds: np.ndarray
    test: KeypointData | None = None  # loaded when the routing needed it
    routing: Routing | None = None

    def folder(self, comp: Competition) -> RunFolder:
        return RunFolder(comp.workspace.runs / self.run_id)


def run_identity(comp: Competition, spec: RunSpec) -> RunIdentity:
    """Validate `spec` against the work folder and compute its run id."""
    config = resolve_config(spec.family, spec.overrides, epochs=spec.epochs, seed=spec.seed)
    plan = plan_targets(comp, spec.target_set, spec.keypoints)
    for sub in plan.submodels:
        check_flip(comp, config, sub.keypoints)
    data = _load_split(comp, comp.workspace.train_npz)
    fold_of_row = _load_folds(comp, data)
    n_folds = int(fold_of_row.max()) + 1
    if spec.folds is not None and not 1 <= spec.folds <= n_folds:
        raise KitError(
            f"--folds {spec.folds}: the folds file has {n_folds} folds", hint=f"use 1..{n_folds}"
        )
    inputs = run_inputs(comp)
    test, routing = None, None
    if plan.heads is not None:  # routing reads the test split and the raw files
        test = _load_split(comp, comp.workspace.test_npz)
        routing = route(comp, plan.heads, data, test)
        inputs["data"] = {**inputs["data"], "sources": routing.describe()}
    run_id = make_run_id(config.identity(), plan.describe(), inputs)
    return RunIdentity(config, plan, inputs, run_id, data, fold_of_row, test, routing)


# ---------------------------------------------------------------- opening, training, finishing


@dataclass
class OpenRun:
    """A run opened for training: its spec and context, the folds asked for and those done.
    It is the fold queue's `TrainableRun`."""

    spec: RunSpec
    ctx: RunContext
    run_id: str
    requested: list[int]
    found: list[int]
    started: float
    pictures: bool = True

    @property
    def todo(self) -> list[int]:
        return [f for f in self.requested if f not in self.found]

    def announce(self) -> None:
        for fold in self.requested:
            if fold in self.found:
                event = FoldEvent(fold, self.ctx.n_folds, "resumed", run=self.run_id)
                self.ctx.on_event(event.event())

    def train_here(self, fold: int) -> FoldRecord:
        if self.ctx.device.type == "cpu":
            configure_cpu_threads()
        return train_fold(self, fold)

    def in_worker(self, fold: int) -> tuple[Callable[..., Any], tuple]:
        return train_fold_in_worker, (self.spec, fold)

    def finish(self, trained: list[int]) -> RunResult:
        return finish_run(self, trained, self.pictures)


def open_run(
    comp: Competition,
    spec: RunSpec,
    *,
    device: str | None = None,
    on_event: OnEvent = ignore,
    pictures: bool = True,
) -> OpenRun | RunResult:
    """Validate a run and find its folder: the finished run when nothing is left to train,
    else an `OpenRun` whose folds `train_fold` trains (in this or another process)."""
    started = time.perf_counter()
    identity = run_identity(comp, spec)
    pseudo = _pseudo_set(comp, identity.config, identity.plan, identity.inputs)
    folder = identity.folder(comp)
    n_folds = int(identity.folds.max()) + 1
    requested = list(range(n_folds if spec.folds is None else spec.folds))
    found = folder.done_folds()
    if set(requested) <= set(found) and folder.finished(found):
        manifest = RunManifest.load(folder.manifest)
        return RunResult(identity.run_id, folder.path, manifest, reused=True, resumed_folds=found)
    # every input read and checked before the run's folder is made: a bad one leaves nothing
    test = identity.test or _load_split(comp, comp.workspace.test_npz)
    torch_device = resolve_device(device)
    folder.path.mkdir(parents=True, exist_ok=True)
    if not folder.config.is_file():
        described = {"run_id": identity.run_id, **identity.config.to_dict()}
        write_json(folder.config, {**described, **identity.plan.describe()})
    ctx = RunContext(
        comp, identity.config, identity.plan, identity.data, test, identity.folds,
        torch_device, folder, identity.inputs, on_event, pseudo, identity.routing,
    )  # fmt: skip
    return OpenRun(spec, ctx, identity.run_id, requested, found, started, pictures)


def train_fold(run: OpenRun, fold: int) -> FoldRecord:
    """Train, predict and save one fold (its done marker last); its record."""
    n_folds = run.ctx.n_folds
    run.ctx.on_event(FoldEvent(fold, n_folds, "start", run=run.run_id).event())
    record = train_one_fold(run.ctx, fold)
    done = FoldEvent(fold, n_folds, "done", record.score, record.seconds, run.run_id)
    run.ctx.on_event(done.event())
    return record


def train_fold_in_worker(
    comp: Competition, spec: RunSpec, fold: int, *, on_event: OnEvent = ignore
) -> FoldRecord | None:
    """In a worker process: reopen the run from its spec (the same id) and train one fold;
    None when the run was finished meanwhile (by another process)."""
    run = open_run(comp, spec, device="cpu", on_event=on_event)
    if isinstance(run, RunResult):
        return None
    return train_fold(run, fold)


def finish_run(run: OpenRun, trained: list[int], pictures: bool = True) -> RunResult:
    """Assemble every done fold into the run's arrays and manifest."""
    manifest = _write_run(run.ctx, run.run_id, run.started, pictures)
    resumed = [f for f in run.requested if f in run.found]
    return RunResult(
        run.run_id, run.ctx.folder.path, manifest, trained_folds=trained, resumed_folds=resumed
    )


def train_run(
    comp: Competition,
    family: str,
    overrides: dict[str, Any] | None = None,
    *,
    device: str | None = None,
    on_event: OnEvent = ignore,
    pictures: bool = True,
    workers: int = 1,
    **spec_fields: Any,
) -> RunResult:
    """Train `family` on every fold of the folds file (or the first `folds`), write the run.
    `spec_fields` are `RunSpec`'s: epochs, seed, target_set, keypoints, folds.

    `workers` > 1 trains that many folds at once in worker processes (CPU only; see
    kit.training.parallel for why that beats one process with every thread)."""
    spec = RunSpec(family, dict(overrides or {}), **spec_fields)
    run = open_run(comp, spec, device=device, on_event=on_event, pictures=pictures)
    if isinstance(run, RunResult):
        return run
    if workers > 1 and run.ctx.device.type == "cpu" and len(run.todo) > 1:
        with FoldPool(comp, workers, on_event=on_event) as pool:
            return FoldQueue(pool).train_one(run)
    return FoldQueue(InProcessExecutor()).train_one(run)


# ---------------------------------------------------------------- assembling a run


def assemble(ctx: RunContext, folds_done: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OOF (asserting no leak), its fold-of-origin array, and the fold-averaged test array."""
    assembler = OofAssembler(ctx.folds, len(ctx.plan.keypoints))
    tests = []
    for fold in folds_done:
        arrays = load_fold_arrays(ctx.folder, fold)
        assembler.add(fold, arrays.rows, arrays.oof)
        tests.append(arrays.test)
    oof, filled_by = assembler.finish(folds_done)
    return oof, filled_by, np.mean(tests, axis=0).astype(np.float32)


def _manifest(
    ctx: RunContext, run_id: str, folds_done: list[int], oof, records: list[FoldRecord], wall
) -> RunManifest:
    predicted = np.flatnonzero(np.isin(ctx.folds, folds_done))
    cv = evaluate(ctx.comp, oof[predicted], ctx.data.subset(predicted), list(ctx.plan.keypoints))
    by_fold = {str(r.fold): r for r in records}
    return RunManifest(
        run_id=run_id,
        competition=ctx.comp.name,
        family=ctx.config.family,
        config=ctx.config.to_dict(),
        target_set=ctx.plan.target_set,
        plan=ctx.plan.describe(),
        keypoints=[ctx.comp.keypoint_names[k] for k in ctx.plan.keypoints],
        keypoint_indices=list(ctx.plan.keypoints),
        metric=ctx.comp.metric,
        seed=int(ctx.config.train["seed"]),
        seeds={k: {n: s["seed"] for n, s in r.submodels.items()} for k, r in by_fold.items()},
        folds={
            "file": str(ctx.comp.workspace.folds_csv),
            "sha256": ctx.inputs["folds"],
            "total": ctx.n_folds,
            "trained": folds_done,
            "complete": len(folds_done) == ctx.n_folds,
            "rows_predicted": len(predicted),
            "rows_total": len(ctx.folds),
        },
        data={
            "train_rows": len(ctx.data),
            "test_rows": len(ctx.test),
            **ctx.inputs["data"],
        },
        cv=cv.to_dict(),
        fold_scores={k: r.scores for k, r in by_fold.items()},
        fold_epochs={
            k: {n: s["epochs_run"] for n, s in r.submodels.items()} for k, r in by_fold.items()
        },
        fold_seconds={k: r.seconds for k, r in by_fold.items()},
        train_seconds=sum(r.seconds for r in records),
        wall_seconds=wall,
        device=str(ctx.device),
        fold_devices={k: r.device for k, r in by_fold.items()},
        fold_speeds={k: r.speed for k, r in by_fold.items()},
        torch=torch.__version__,
        pseudo={} if ctx.pseudo is None else ctx.pseudo.describe(),
        kit=kit.__version__,
        code_sha256=ctx.inputs["code"],
        git_commit=git_commit(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _write_pictures(ctx: RunContext, oof: np.ndarray, records: list[FoldRecord]) -> None:
    folder = ctx.folder
    plot_curves([r.to_json() for r in records], folder.curves, metric=ctx.comp.metric)
    truth = ctx.data.keypoints[:, list(ctx.plan.keypoints)]
    predicted = np.isfinite(oof).all(axis=(1, 2))
    errors = np.full(len(oof), np.nan)
    errors[predicted] = per_row_error(oof[predicted], truth[predicted])
    plot_worst(ctx.data.images, truth, oof, errors, folder.worst)


def _write_run(ctx: RunContext, run_id: str, started: float, pictures: bool) -> RunManifest:
    """Assemble every done fold into oof.npy / test.npy / pictures, then the manifest."""
    folder = ctx.folder
    folder.manifest.unlink(missing_ok=True)  # "finished" only once all is rewritten
    folds_done = folder.done_folds()
    oof, filled_by, test = assemble(ctx, folds_done)
    records = [folder.fold_record(f) for f in folds_done]
    manifest = _manifest(ctx, run_id, folds_done, oof, records, time.perf_counter() - started)
    _save_npy(folder.oof_folds, filled_by)
    _save_npy(folder.oof, oof)
    _save_npy(folder.test, test)
    if pictures:  # curves.png and worst.png (about a second; kit run turns them off)
        _write_pictures(ctx, oof, records)
    manifest.write(folder.manifest)
    return manifest


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


# ---------------------------------------------------------------- a run's inputs


def _load_folds(comp: Competition, data: KeypointData) -> np.ndarray:
    folds = np.asarray(load_folds(comp, data), np.int64)
    if folds.shape != (len(data),) or folds.min() < 0:
        raise DataError(
            "folds do not match the cached training rows",
            path=comp.workspace.folds_csv,
            hint=f"rerun `kit folds {comp.name}`",
        )
    return folds


def _load_split(comp: Competition, path: Path) -> KeypointData:
    split = KeypointData.load(path)
    size = comp.input_size
    if split.images.shape[1:] != (size, size) or split.keypoints.shape[1] != comp.num_keypoints:
        raise DataError(
            f"cached arrays have images {split.images.shape[1:]} and "
            f"{split.keypoints.shape[1]} keypoints; {comp.name} needs {size}x{size} and "
            f"{comp.num_keypoints}",
            path=path,
            hint=f"run `kit fetch {comp.name} --force`",
        )
    return split


def _pseudo_set(
    comp: Competition, config: RunConfig, plan: TargetPlan, inputs: dict
) -> PseudoResult | None:
    """The pseudo-label set of setting `pseudo` (None for ""), built from this data and folds."""
    pseudo_id = str(config.train["pseudo"])
    if not pseudo_id:
        return None
    if plan.impute:
        raise KitError(
            "--target-set impute and setting pseudo both fill the missing keypoints",
            hint="use one: --target-set masked with pseudo, or drop pseudo",
        )
    pseudo = load_pseudo(comp, pseudo_id)
    pseudo.check_inputs(comp, inputs)
    return pseudo
