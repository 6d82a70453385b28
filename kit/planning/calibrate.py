"""Measured costs: a few timed training steps and a timed prediction per configuration, on this
device, at the competition's input size and row count (seconds, not minutes)."""

from __future__ import annotations

import time

import numpy as np
import torch

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.planning.planner import Candidate
from kit.planning.portfolio import PortfolioEntry
from kit.training.config import resolve_config
from kit.training.device import DeviceData
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
