"""`kit train` as a library call: K-fold training with content-addressed, resumable run folders.

A run id hashes (family, resolved config, target plan, keypoints, data checksums, folds file
checksum, training code checksum), so the same work is never done twice, and a kit upgrade or
edit that can change what a run learns gets new runs instead of reusing stale ones.
``comp.workspace.runs/<run-id>/`` holds::

    config.json                 the resolved config (written first)
    fold-<k>.pt                 the fold's weights (every sub-model of the target set)
    fold-<k>.npz                the fold's OOF rows + predictions and its test predictions
    fold-<k>.done.json          the done marker, written last: a fold counts only with it
    oof.npy  oof_folds.npy      (N, K, 2) OOF predictions (NaN = not predicted) and the fold
                                whose model predicted each row (-1 = none)
    test.npy                    (M, K, 2) test predictions averaged over the fold models
    manifest.json               scores, seeds, folds, timing, device, versions (written last)
    curves.png  worst.png

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

One file (about 470 lines) on purpose: the run folder's layout, its writers and its readers
change together; the parts without files live beside it (config, loop, oof, predict).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import kit
from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import DataError, KitError
from kit.metrics import evaluate, per_row_error
from kit.progress import Event, OnEvent, ignore
from kit.provenance import git_commit, run_inputs
from kit.store.files import read_json
from kit.store.manifests import RunManifest
from kit.store.runs import (
    RUN_FORMAT,
    RunFolder,
    RunResult,
    done_folds,
    make_run_id,
)
from kit.training.config import RunConfig, resolve_config, run_speed
from kit.training.device import DeviceData, configure_cpu_threads, device_images, resolve_device
from kit.training.flip import check_flip, flip_permutation
from kit.training.loop import fit
from kit.training.oof import OofAssembler
from kit.training.predict import predict_rows
from kit.training.sources import Routing, route
from kit.training.targets import LinearImputer, TargetPlan, plan_targets, pseudo_targets
from kit.workspace import atomic_path, write_json

if TYPE_CHECKING:
    from kit.store.pseudo import PseudoResult


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


@dataclass
class RunContext:
    """Everything one `train_run` call shares between folds."""

    comp: Competition
    config: RunConfig
    plan: TargetPlan
    data: KeypointData
    test: KeypointData
    folds: np.ndarray
    device: torch.device
    path: Path
    inputs: dict[str, Any]  # `run_inputs`, as hashed into the run id
    on_event: OnEvent = ignore
    pseudo: PseudoResult | None = None  # the pseudo-label set of setting `pseudo`, if any
    routing: Routing | None = None  # each row's label source (target set sources), if any

    @cached_property
    def images(self) -> torch.Tensor:
        return device_images(self.data.images, self.device)

    @cached_property
    def test_images(self) -> torch.Tensor:
        return device_images(self.test.images, self.device)

    @cached_property
    def student_images(self) -> torch.Tensor:
        """The training images, then the test images (rows N.. of `PseudoTargets`)."""
        return torch.cat([self.images, self.test_images])


def fold_seed(seed: int, fold: int, submodel: int) -> int:
    """Independent, reproducible seed per (run seed, fold, sub-model)."""
    return int(np.random.SeedSequence([seed, fold, submodel]).generate_state(1)[0])


def _load_folds(comp: Competition, data: KeypointData) -> np.ndarray:
    from kit.data.folds import load_folds  # the folds stage owns the file format

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


# ---------------------------------------------------------------- per-fold artifacts


def _train_fold(ctx: RunContext, fold: int) -> dict[str, Any]:
    started = time.perf_counter()
    comp, config, plan = ctx.comp, ctx.config, ctx.plan
    val_rows = np.flatnonzero(ctx.folds == fold)
    train_rows = np.flatnonzero(ctx.folds != fold)
    keypoints = ctx.data.keypoints
    imputed = None
    if plan.impute:  # fitted on this fold's training rows only; validation truth stays as is
        imputer = LinearImputer.fit(keypoints[train_rows], threshold=config.train["impute_r2"])
        filled, mask = imputer.transform(keypoints[train_rows])
        keypoints = keypoints.copy()
        keypoints[train_rows] = filled
        imputed = {"filled": int(mask.sum()), "fits": imputer.summary(comp.keypoint_names)}
    device_data, keypoints, extra_rows, pseudo = _fold_data(ctx, fold, keypoints, train_rows)
    sources = _device_row_sources(ctx)  # None unless each label source has a head
    routing = ctx.routing
    val_sources = None if routing is None else routing.train[val_rows]
    test_sources = None if routing is None else routing.test
    val_truth = ctx.data.subset(val_rows)  # the true labels: the fold is scored on them only
    oof_parts, test_parts, states, subs = {}, {}, {}, {}
    for index, sub in enumerate(plan.submodels):
        rows = sub.training_rows(keypoints, np.concatenate([train_rows, extra_rows]))
        seed = fold_seed(int(config.train["seed"]), fold, index)
        result = fit(
            comp,
            config,
            sub,
            device_data,
            rows,
            val_rows,
            val_truth,
            device=ctx.device,
            seed=seed,
            fold=fold,
            on_event=ctx.on_event,
            sources=sources,
            run=ctx.path.name,
        )
        perm = flip_permutation(comp, sub.columns) if config.train["tta"] else None
        batch = int(config.train["eval_batch_size"])
        predict = partial(
            predict_rows, result.model, device=ctx.device, batch_size=batch, flip_perm=perm,
            speed=result.speed,
        )  # fmt: skip
        oof_parts[sub.name] = sub.pick(predict(ctx.images, val_rows), val_sources)
        test_parts[sub.name] = sub.pick(predict(ctx.test_images, None), test_sources)
        states[sub.name] = {k: v.cpu() for k, v in result.model.state_dict().items()}
        subs[sub.name] = {
            "seed": seed,
            "train_rows": len(rows),
            **({} if routing is None else {"source_rows": routing.counts(sources[rows])}),
            "best_epoch": result.best_epoch,
            "best_val_score": result.best_score,
            "kept_epoch": result.kept_epoch,
            "last_val_score": result.last_score,
            "epochs_run": len(result.history),
            "seconds": result.seconds,
            "history": result.history,
        }
    oof, test = plan.merge(oof_parts), plan.merge(test_parts)
    scores = evaluate(comp, oof, val_truth, keypoints=list(plan.keypoints))
    record = {
        "fold": fold,
        "val_rows": len(val_rows),
        "score": scores.overall,
        "scores": scores.to_dict(),
        "submodels": subs,
        "imputation": imputed,
        "pseudo": pseudo,
        "device": str(ctx.device),
        "speed": run_speed(config, ctx.device).to_dict(),
        "seconds": time.perf_counter() - started,
    }
    _save_fold(ctx, fold, states, val_rows, oof, test, record)
    return record


def _fold_data(ctx: RunContext, fold: int, keypoints: np.ndarray, train_rows: np.ndarray):
    """The fold's device data and its keypoints on the host, the rows it trains on besides
    `train_rows` (test rows with pseudo labels), and what the pseudo labels added (None
    without a pseudo-label set). With heads (target set sources) the device labels are
    widened (kit.training.sources.Heads.widen); the host keypoints stay (rows, K, 2)."""
    if ctx.pseudo is None:
        labels = _device_labels(ctx, keypoints, None)
        return DeviceData(ctx.images, *labels), keypoints, np.zeros(0, np.int64), None
    weight = float(ctx.config.train["pseudo_weight"])
    train_labels, test_labels = ctx.pseudo.fold_labels(fold)
    targets = pseudo_targets(keypoints, train_rows, train_labels, test_labels, weight)
    labels = _device_labels(ctx, targets.keypoints, targets.weights)
    data = DeviceData(ctx.student_images, *labels)
    added = {"weight": weight, "filled": targets.filled, "test_rows": len(targets.test_rows)}
    return data, targets.keypoints, targets.test_rows, added


def _device_row_sources(ctx: RunContext) -> np.ndarray | None:
    """The label source of every row of the fold's device data: the training rows, then the
    test rows when they train too (pseudo labels); None without heads."""
    if ctx.routing is None:
        return None
    if ctx.pseudo is None:
        return ctx.routing.train
    return np.concatenate([ctx.routing.train, ctx.routing.test])


def _device_labels(
    ctx: RunContext, keypoints: np.ndarray, weights: np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Labels (and loss weights) as device tensors, widened to the heads' blocks if any."""
    sources = _device_row_sources(ctx)
    if sources is not None:
        heads = ctx.routing.heads
        keypoints = heads.widen(keypoints, sources, np.nan)
        weights = None if weights is None else heads.widen(weights, sources, 0.0)
    on_device = partial(torch.as_tensor, device=ctx.device)
    return on_device(keypoints), None if weights is None else on_device(weights)


def _save_fold(ctx: RunContext, fold: int, states: dict, rows, oof, test, record) -> None:
    checkpoint = {
        "format": RUN_FORMAT,
        "family": ctx.config.family,
        "model_hparams": ctx.config.model,
        "input_size": ctx.comp.input_size,
        "fold": fold,
        "submodels": {
            sub.name: {
                "keypoints": list(sub.keypoints),
                "outputs": len(sub.columns),  # the network's keypoints (heads: all blocks)
                "state_dict": states[sub.name],
            }
            for sub in ctx.plan.submodels
        },
    }
    with atomic_path(ctx.path / f"fold-{fold}.pt") as tmp:
        torch.save(checkpoint, tmp)
    with atomic_path(ctx.path / f"fold-{fold}.npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, rows=rows, oof=oof, test=test)
    write_json(RunFolder(ctx.path).marker(fold), record)  # last: the fold now counts as done


# ---------------------------------------------------------------- assembling a run


def assemble(ctx: RunContext, folds_done: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OOF (asserting no leak), its fold-of-origin array, and the fold-averaged test array."""
    assembler = OofAssembler(ctx.folds, len(ctx.plan.keypoints))
    tests = []
    for fold in folds_done:
        with np.load(ctx.path / f"fold-{fold}.npz") as z:
            assembler.add(fold, z["rows"], z["oof"])
            tests.append(z["test"])
    oof, filled_by = assembler.finish(folds_done)
    return oof, filled_by, np.mean(tests, axis=0).astype(np.float32)


def _manifest(
    ctx: RunContext, run_id: str, folds_done: list[int], oof, records, wall
) -> RunManifest:
    predicted = np.flatnonzero(np.isin(ctx.folds, folds_done))
    cv = evaluate(ctx.comp, oof[predicted], ctx.data.subset(predicted), list(ctx.plan.keypoints))
    n_folds = int(ctx.folds.max()) + 1
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
        seeds={str(r["fold"]): {n: s["seed"] for n, s in r["submodels"].items()} for r in records},
        folds={
            "file": str(ctx.comp.workspace.folds_csv),
            "sha256": ctx.inputs["folds"],
            "total": n_folds,
            "trained": folds_done,
            "complete": len(folds_done) == n_folds,
            "rows_predicted": len(predicted),
            "rows_total": len(ctx.folds),
        },
        data={
            "train_rows": len(ctx.data),
            "test_rows": len(ctx.test),
            **ctx.inputs["data"],
        },
        cv=cv.to_dict(),
        fold_scores={str(r["fold"]): r["scores"] for r in records},
        fold_epochs={
            str(r["fold"]): {n: s["epochs_run"] for n, s in r["submodels"].items()} for r in records
        },
        fold_seconds={str(r["fold"]): r["seconds"] for r in records},
        train_seconds=sum(r["seconds"] for r in records),
        wall_seconds=wall,
        device=str(ctx.device),
        fold_devices={str(r["fold"]): r["device"] for r in records},
        fold_speeds={str(r["fold"]): r["speed"] for r in records},
        torch=torch.__version__,
        pseudo={} if ctx.pseudo is None else ctx.pseudo.describe(),
        kit=kit.__version__,
        code_sha256=ctx.inputs["code"],
        git_commit=git_commit(),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def _write_pictures(ctx: RunContext, oof: np.ndarray, records: list[dict]) -> None:
    from kit.training.plots import plot_curves, plot_worst

    plot_curves(records, ctx.path / "curves.png", metric=ctx.comp.metric)
    truth = ctx.data.keypoints[:, list(ctx.plan.keypoints)]
    predicted = np.isfinite(oof).all(axis=(1, 2))
    errors = np.full(len(oof), np.nan)
    errors[predicted] = per_row_error(oof[predicted], truth[predicted])
    plot_worst(ctx.data.images, truth, oof, errors, ctx.path / "worst.png")


# ---------------------------------------------------------------- the entry point


@dataclass
class OpenRun:
    """A run opened for training: its context, the folds asked for and those already done."""

    ctx: RunContext
    run_id: str
    requested: list[int]
    found: list[int]
    started: float

    @property
    def todo(self) -> list[int]:
        return [f for f in self.requested if f not in self.found]


def open_run(
    comp: Competition,
    family: str,
    overrides: dict[str, Any] | None = None,
    *,
    folds: int | None = None,
    epochs: int | None = None,
    target_set: str = "masked",
    keypoints: str | None = None,
    device: str | None = None,
    seed: int | None = None,
    on_event: OnEvent = ignore,
) -> OpenRun | RunResult:
    """Validate a run and find its folder: the finished run when nothing is left to train,
    else an `OpenRun` whose folds `train_fold` trains (in this or another process)."""
    started = time.perf_counter()
    config = resolve_config(family, overrides, epochs=epochs, seed=seed)
    plan = plan_targets(comp, target_set, keypoints)
    for sub in plan.submodels:
        check_flip(comp, config, sub.keypoints)
    data = _load_split(comp, comp.workspace.train_npz)
    fold_of_row = _load_folds(comp, data)
    n_folds = int(fold_of_row.max()) + 1
    if folds is not None and not 1 <= folds <= n_folds:
        raise KitError(
            f"--folds {folds}: the folds file has {n_folds} folds", hint=f"use 1..{n_folds}"
        )
    inputs = run_inputs(comp)
    test, routing = None, None
    if plan.heads is not None:  # routing reads the test split and the raw files
        test = _load_split(comp, comp.workspace.test_npz)
        routing = route(comp, plan.heads, data, test)
        inputs["data"] = {**inputs["data"], "sources": routing.describe()}
    pseudo = _pseudo_set(comp, config, plan, inputs)
    run_id = make_run_id(config.to_dict(), plan.describe(), inputs)
    path = comp.workspace.runs / run_id
    requested = list(range(n_folds if folds is None else folds))
    found = done_folds(path)
    if set(requested) <= set(found) and RunFolder(path).finished(found):
        return RunResult(
            run_id, path, RunManifest.load(path / "manifest.json"), reused=True, resumed_folds=found
        )
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "config.json").is_file():
        write_json(path / "config.json", {"run_id": run_id, **config.to_dict(), **plan.describe()})
    torch_device = resolve_device(device)
    if test is None:
        test = _load_split(comp, comp.workspace.test_npz)
    ctx = RunContext(
        comp,
        config,
        plan,
        data,
        test,
        fold_of_row,
        torch_device,
        path,
        inputs,
        on_event,
        pseudo,
        routing,
    )
    return OpenRun(ctx, run_id, requested, found, started)


def train_fold(run: OpenRun, fold: int) -> dict[str, Any]:
    """Train, predict and save one fold (its done marker last); its record."""
    n_folds = int(run.ctx.folds.max()) + 1
    run.ctx.on_event(FoldEvent(fold, n_folds, "start", run=run.run_id).event())
    record = _train_fold(run.ctx, fold)
    done = FoldEvent(fold, n_folds, "done", record["score"], record["seconds"], run.run_id)
    run.ctx.on_event(done.event())
    return record


def finish_run(run: OpenRun, trained: list[int], pictures: bool = True) -> RunResult:
    """Assemble every done fold into the run's arrays and manifest."""
    manifest = _write_run(run.ctx, run.run_id, run.started, pictures)
    resumed = [f for f in run.requested if f in run.found]
    return RunResult(
        run.run_id, run.ctx.path, manifest, trained_folds=trained, resumed_folds=resumed
    )


def train_run(
    comp: Competition,
    family: str,
    overrides: dict[str, Any] | None = None,
    *,
    folds: int | None = None,
    epochs: int | None = None,
    target_set: str = "masked",
    keypoints: str | None = None,
    device: str | None = None,
    seed: int | None = None,
    on_event: OnEvent = ignore,
    pictures: bool = True,
    workers: int = 1,
) -> RunResult:
    """Train `family` on every fold of the folds file (or the first `folds`), write the run.

    `workers` > 1 trains that many folds at once in worker processes (CPU only; see
    kit.training.parallel for why that beats one process with every thread)."""
    run = open_run(
        comp, family, overrides, folds=folds, epochs=epochs, target_set=target_set,
        keypoints=keypoints, device=device, seed=seed, on_event=on_event,
    )  # fmt: skip
    if isinstance(run, RunResult):
        return run
    n_folds = int(run.ctx.folds.max()) + 1
    for fold in run.requested:
        if fold in run.found:
            on_event(FoldEvent(fold, n_folds, "resumed", run=run.run_id).event())
    if workers > 1 and run.ctx.device.type == "cpu" and len(run.todo) > 1:
        from kit.training.parallel import FoldPool, RunSpec

        spec = RunSpec(family, dict(overrides or {}), epochs, seed, target_set, keypoints, folds)
        with FoldPool(comp, workers, on_event=on_event) as pool:
            trained = pool.train_folds(spec, run.todo)
        return finish_run(run, trained, pictures)
    if run.ctx.device.type == "cpu":
        configure_cpu_threads()
    trained = []
    for fold in run.todo:
        train_fold(run, fold)
        trained.append(fold)
    return finish_run(run, trained, pictures)


def _pseudo_set(comp: Competition, config: RunConfig, plan: TargetPlan, inputs: dict):
    """The pseudo-label set of setting `pseudo` (None for ""), built from this data and folds."""
    pseudo_id = str(config.train["pseudo"])
    if not pseudo_id:
        return None
    from kit.store.pseudo import load_pseudo  # late: kit.pseudo reads runs (this module)

    if plan.impute:
        raise KitError(
            "--target-set impute and setting pseudo both fill the missing keypoints",
            hint="use one: --target-set masked with pseudo, or drop pseudo",
        )
    pseudo = load_pseudo(comp, pseudo_id)
    pseudo.check_inputs(comp, inputs)
    return pseudo


def _write_run(ctx: RunContext, run_id: str, started: float, pictures: bool) -> RunManifest:
    """Assemble every done fold into oof.npy / test.npy / pictures, then the manifest."""
    path = ctx.path
    (path / "manifest.json").unlink(missing_ok=True)  # "finished" only once all is rewritten
    folds_done = done_folds(path)
    oof, filled_by, test = assemble(ctx, folds_done)
    records = [read_json(RunFolder(path).marker(f)) for f in folds_done]
    manifest = _manifest(ctx, run_id, folds_done, oof, records, time.perf_counter() - started)
    _save_npy(path / "oof_folds.npy", filled_by)
    _save_npy(path / "oof.npy", oof)
    _save_npy(path / "test.npy", test)
    if pictures:  # curves.png and worst.png (about a second; tune turns them off)
        _write_pictures(ctx, oof, records)
    manifest.write(path / "manifest.json")
    return manifest


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)
