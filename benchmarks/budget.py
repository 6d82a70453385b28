"""Fit a family's epochs into a wall-clock budget: shared by the accuracy benchmarks."""

from __future__ import annotations

import math

import numpy as np
import torch

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.planning.calibrate import PROBE_ROWS, time_steps
from kit.training.config import resolve_config
from kit.training.device import DeviceData
from kit.training.loop import Trainer


def calibrate(
    comp: Competition,
    family: str,
    data: KeypointData,
    folds: np.ndarray,
    overrides: dict | None = None,
    device: torch.device | None = None,
) -> tuple[float, float]:
    """(seconds per epoch incl. validation, forward images/s), from a few timed steps."""
    device = device or torch.device("cpu")
    config = resolve_config(family, overrides)
    train_rows, val_rows = np.flatnonzero(folds != 0), np.flatnonzero(folds == 0)
    keypoints = tuple(range(comp.num_keypoints))
    trainer = Trainer.create(comp, config, keypoints, len(train_rows), device, seed=0)
    device_data = DeviceData.from_arrays(data.images, data.keypoints, device)
    step_s, rate = time_steps(
        trainer, device_data, train_rows[: trainer.batch_size], val_rows[:PROBE_ROWS], device
    )
    epoch_s = len(train_rows) // trainer.batch_size * step_s + len(val_rows) / rate
    return epoch_s, rate


def plan_epochs(
    family: str,
    budget: float,
    epoch_s: float,
    rate: float,
    rows: int,
    folds: int,
    overrides: dict | None = None,
) -> tuple[int, float]:
    """(epochs per fold, fixed seconds per fold): the epochs that fit `budget` / `folds` after
    the fold's fixed cost (OOF + test predictions of `rows` faces, twice with flip TTA); at
    least 1, at most the family's default."""
    train = resolve_config(family, overrides).train
    fixed = (2 if train["tta"] else 1) * rows / rate
    epochs = math.floor((budget / folds - fixed) / epoch_s)
    return max(1, min(int(train["epochs"]), epochs)), fixed
