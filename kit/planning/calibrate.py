"""Measured costs: a few timed training steps and a timed prediction per configuration, on this
device, at the competition's input size and row count (seconds, not minutes)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.planning.planner import SAFETY, Candidate
from kit.planning.portfolio import PortfolioEntry
from kit.stack.boosting import StackSettings, stack_coordinate
from kit.stack.features import FEATURE_SETS, Features, ImagePCA
from kit.training.config import resolve_config
from kit.training.device import DeviceData, available_cpus
from kit.training.loop import Trainer
from kit.training.predict import predict_rows

CALIBRATION_STEPS = 3
PROBE_ROWS = 256  # faces predicted to time the forward pass
FOLD_SETUP_SECONDS = 2.0  # per fold: model build, checkpoint and fold files


def measure(
    comp: Competition,
    entry: PortfolioEntry,
    train: KeypointData,
    test_rows: int,
    device: torch.device,
    folds: int = 5,
    device_data: DeviceData | None = None,
) -> Candidate:
    """`entry` with its seconds per epoch (training + validation of one fold) and per fold
    (set-up, OOF and test predictions, twice with flip TTA)."""
    config = resolve_config(entry.family, entry.overrides)
    n = len(train)
    val_rows = max(1, n // folds)
    train_rows = n - val_rows
    keypoints = tuple(range(comp.num_keypoints))
    trainer = Trainer.create(comp, config, keypoints, train_rows, device, seed=0)
    data = device_data or DeviceData.from_arrays(train.images, train.keypoints, device)
    rows = np.arange(n)
    step_s, rate = time_steps(trainer, data, rows[: trainer.batch_size], rows[:PROBE_ROWS], device)
    epoch_s = max(1, train_rows // trainer.batch_size) * step_s + val_rows / rate
    passes = 2 if config.train["tta"] else 1
    fold_s = FOLD_SETUP_SECONDS + passes * (val_rows + test_rows) / rate
    return Candidate(entry, epoch_seconds=epoch_s, fold_seconds=fold_s)


def time_steps(
    trainer: Trainer,
    data: DeviceData,
    batch_rows: np.ndarray,
    probe_rows: np.ndarray,
    device: torch.device,
) -> tuple[float, float]:
    """(seconds per training step on `batch_rows`, forward images per second on `probe_rows`),
    after one warm-up step."""
    batch = torch.from_numpy(batch_rows).to(device)
    images, points = data.images[batch], data.keypoints[batch]
    trainer.step(images, points)  # warm-up
    _sync(device)
    started = time.perf_counter()
    for _ in range(CALIBRATION_STEPS):
        float(trainer.step(images, points))
    step_s = (time.perf_counter() - started) / CALIBRATION_STEPS
    started = time.perf_counter()
    predict_rows(trainer.model, data.images, probe_rows, device)
    _sync(device)
    return step_s, len(probe_rows) / (time.perf_counter() - started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------- the stack's cost

PROBE_MODELS = 3  # base models in the timed stack fit


@dataclass(frozen=True)
class StackCost:
    """The stack's measured cost: fixed seconds (image features, picking, files) plus, per
    fold count, the seconds of one coordinate of the most-labelled keypoint, scaled by each
    coordinate's labelled rows and by the meta-features that more base models add."""

    fixed: float
    coordinate: dict[int, float]  # folds -> seconds of the probe coordinate at probe_models
    label_shares: tuple[float, ...]  # per coordinate: labelled rows / the probe's
    columns: tuple[float, float]  # LightGBM design columns = a + b * base models
    workers: int
    probe_models: int = PROBE_MODELS  # base models in the timed fit

    def __call__(self, models: int, folds: int) -> float:
        per = self.coordinate.get(folds)
        if per is None:  # not measured: the inner CV grows as (folds - 1) ** 2 fits
            known = max(self.coordinate)
            per = self.coordinate[known] * ((folds - 1) / (known - 1)) ** 2
        a, b = self.columns
        scale = (a + b * models) / (a + b * self.probe_models)
        work = per * scale * sum(self.label_shares)
        return SAFETY * (self.fixed + work / self.workers)


def measure_stack(
    comp: Competition,
    train: KeypointData,
    test_images: np.ndarray,
    fold_choices: tuple[int, ...],
    features: frozenset[str] = frozenset(FEATURE_SETS),
    seed: int = 0,
    bases: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
) -> StackCost:
    """Time the stack on this data, one coordinate per fold count: with `bases` (the trained
    runs' OOF and test predictions, each (N, K, 2)) the real fit, else synthetic base models
    (the truth with a learnable bias and noise) before any run exists."""
    truth = train.keypoints.astype(np.float64)
    labelled = np.isfinite(truth).all(axis=2).sum(axis=0)  # (K,)
    probe = int(np.argmax(labelled))
    started = time.perf_counter()
    pca = ImagePCA.fit(train.images) if "image" in features else None
    oof, test = bases if bases is not None else _synthetic_bases(truth, len(test_images), seed)
    models = list(range(len(oof)))
    train_f = Features.build(oof, train.images, pca)
    test_f = Features.build(test, test_images, pca)
    fixed = time.perf_counter() - started
    weight = np.ones(len(train))
    coordinate = {}
    for folds in fold_choices:
        fold_of_row = np.arange(len(train)) % folds
        x, design = train_f.coordinate(models, probe, 0, features)
        x_test, design_test = test_f.coordinate(models, probe, 0, features)
        started = time.perf_counter()
        stack_coordinate(
            x, design, truth[:, probe, 0], weight, fold_of_row, x_test, design_test,
            metric=comp.metric, settings=StackSettings(features=features),
        )  # fmt: skip
        coordinate[folds] = time.perf_counter() - started
    shares = np.repeat(labelled / max(1, labelled[probe]), 2)
    two, three = (train_f.coordinate([0] * m, probe, 0, features)[1].shape[1] for m in (2, 3))
    columns = (float(2 * two - three), float(three - two))
    return StackCost(
        fixed, coordinate, tuple(shares.tolist()), columns, available_cpus(), len(models)
    )


def _synthetic_bases(
    truth: np.ndarray, test_rows: int, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """PROBE_MODELS stand-ins for base models: the truth, a learnable bias and noise."""
    rng = np.random.default_rng(seed)
    fill = np.where(np.isfinite(truth), truth, np.nanmean(truth, axis=0))
    spread = np.nanstd(truth, axis=0) + 1e-6
    oof = [
        fill
        + 0.1 * (m + 1) * spread * np.tanh((fill - fill.mean(0)) / spread)
        + rng.normal(0, 1.5, fill.shape)
        for m in range(PROBE_MODELS)
    ]
    return oof, [b[:test_rows] for b in oof]


def measure_stack_of_runs(
    comp: Competition, runs: list, folds: int, features: frozenset[str] = frozenset(FEATURE_SETS)
) -> StackCost | None:
    """The stack's cost measured on the trained runs' own predictions (kit.store.RunResult):
    what the stack will fit, not a stand-in for it. None without a run of every keypoint."""
    runs = [r for r in runs if len(r.keypoints) == comp.num_keypoints]
    if not runs:
        return None
    train = KeypointData.load(comp.workspace.train_npz)
    test = KeypointData.load(comp.workspace.test_npz)
    bases = ([np.asarray(r.oof, dtype=np.float64) for r in runs],
             [np.asarray(r.test, dtype=np.float64) for r in runs])  # fmt: skip
    return measure_stack(comp, train, test.images, (folds,), features, bases=bases)
