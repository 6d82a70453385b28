"""One fold of a run: impute or pseudo-label its training targets, fit each sub-model of the
target plan, predict its validation and test rows, and save it (kit.training.checkpoint)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any

import numpy as np
import torch

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.metrics import evaluate
from kit.progress import OnEvent, ignore
from kit.store.pseudo import PseudoResult
from kit.store.runs import FoldRecord, RunFolder
from kit.training.checkpoint import FoldArrays, TrainedSubmodel, save_fold
from kit.training.config import RunConfig, run_speed
from kit.training.device import DeviceData, device_images
from kit.training.flip import flip_permutation
from kit.training.loop import fit
from kit.training.predict import predict_rows
from kit.training.sources import Routing
from kit.training.targets import LinearImputer, TargetPlan, pseudo_targets


@dataclass
class RunContext:
    """Everything the folds of one run share."""

    comp: Competition
    config: RunConfig
    plan: TargetPlan
    data: KeypointData
    test: KeypointData
    folds: np.ndarray
    device: torch.device
    folder: RunFolder
    inputs: dict[str, Any]  # `run_inputs`, as hashed into the run id
    on_event: OnEvent = ignore
    pseudo: PseudoResult | None = None  # the pseudo-label set of setting `pseudo`, if any
    routing: Routing | None = None  # each row's label source (target set sources), if any

    @property
    def n_folds(self) -> int:
        return int(self.folds.max()) + 1

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


def train_one_fold(ctx: RunContext, fold: int) -> FoldRecord:
    """Train, predict and save fold `fold` (its done marker last); its record."""
    started = time.perf_counter()
    comp, config, plan = ctx.comp, ctx.config, ctx.plan
    val_rows = np.flatnonzero(ctx.folds == fold)
    train_rows = np.flatnonzero(ctx.folds != fold)
    keypoints, imputed = _imputed(ctx, train_rows)
    device_data, keypoints, extra_rows, pseudo = _fold_data(ctx, fold, keypoints, train_rows)
    sources = _device_row_sources(ctx)  # None unless each label source has a head
    routing = ctx.routing
    val_sources = None if routing is None else routing.train[val_rows]
    test_sources = None if routing is None else routing.test
    val_truth = ctx.data.subset(val_rows)  # the true labels: the fold is scored on them only
    oof_parts, test_parts, trained, subs = {}, {}, {}, {}
    for index, sub in enumerate(plan.submodels):
        rows = sub.training_rows(keypoints, np.concatenate([train_rows, extra_rows]))
        seed = fold_seed(int(config.train["seed"]), fold, index)
        result = fit(
            comp, config, sub, device_data, rows, val_rows, val_truth, device=ctx.device,
            seed=seed, fold=fold, on_event=ctx.on_event, sources=sources, run=ctx.folder.run_id,
        )  # fmt: skip
        perm = flip_permutation(comp, sub.columns) if config.train["tta"] else None
        batch = int(config.train["eval_batch_size"])
        predict = partial(
            predict_rows, result.model, device=ctx.device, batch_size=batch, flip_perm=perm,
            speed=result.speed,
        )  # fmt: skip
        oof_parts[sub.name] = sub.pick(predict(ctx.images, val_rows), val_sources)
        test_parts[sub.name] = sub.pick(predict(ctx.test_images, None), test_sources)
        state = {k: v.cpu() for k, v in result.model.state_dict().items()}
        # outputs: the network's keypoints (heads: all blocks)
        trained[sub.name] = TrainedSubmodel(tuple(sub.keypoints), len(sub.columns), state)
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
    record = FoldRecord(
        fold=fold,
        val_rows=len(val_rows),
        score=scores.overall,
        scores=scores.to_dict(),
        submodels=subs,
        imputation=imputed,
        pseudo=pseudo,
        device=str(ctx.device),
        speed=run_speed(config, ctx.device).to_dict(),
        seconds=time.perf_counter() - started,
    )
    arrays = FoldArrays(val_rows, oof, test)
    save_fold(ctx.folder, config, comp.input_size, trained, arrays, record)
    return record


def _imputed(ctx: RunContext, train_rows: np.ndarray) -> tuple[np.ndarray, dict | None]:
    """The keypoints with the fold's training rows imputed (target set impute: fitted on those
    rows only; validation truth stays as is), and what the imputation did (None without)."""
    keypoints = ctx.data.keypoints
    if not ctx.plan.impute:
        return keypoints, None
    imputer = LinearImputer.fit(keypoints[train_rows], threshold=ctx.config.train["impute_r2"])
    filled, mask = imputer.transform(keypoints[train_rows])
    keypoints = keypoints.copy()
    keypoints[train_rows] = filled
    return keypoints, {"filled": int(mask.sum()), "fits": imputer.summary(ctx.comp.keypoint_names)}


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
