"""Optimisers and learning-rate schedules, each a record in a small lookup table (timm style).

`train["optimizer"]` names an `OptimizerRecipe`; `train["schedule"]` names a function of the
training progress. Schedules are per optimizer step, after a linear warmup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


@dataclass(frozen=True)
class OptimizerRecipe:
    """How to build one optimizer from the train settings lr, weight_decay and momentum."""

    name: str
    build: Callable[[Iterable[nn.Parameter], float, float, float], torch.optim.Optimizer]


def _sgd(params, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay
    )


OPTIMIZERS: dict[str, OptimizerRecipe] = {
    recipe.name: recipe
    for recipe in (
        OptimizerRecipe("adamw", lambda p, lr, wd, _: torch.optim.AdamW(p, lr=lr, weight_decay=wd)),
        OptimizerRecipe("sgd", _sgd),
        OptimizerRecipe("adam", lambda p, lr, wd, _: torch.optim.Adam(p, lr=lr, weight_decay=wd)),
    )
}


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# Multiplier of the base lr after the warmup, as a function of the progress (0 -> 1).
SCHEDULES: dict[str, Callable[[float], float]] = {
    "cosine": _cosine,
    # one-cycle's annealing phase (its rise is the warmup): cosine from 1 down to 1/1e4
    "onecycle": lambda progress: 1e-4 + (1 - 1e-4) * _cosine(progress),
    "none": lambda progress: 1.0,
}


def make_optimizer(model: nn.Module, train: dict[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    recipe = OPTIMIZERS[train["optimizer"]]
    return recipe.build(
        params, float(train["lr"]), float(train["weight_decay"]), float(train["momentum"])
    )


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based), per-step schedules."""
    if step < warmup:
        return (step + 1) / warmup
    return SCHEDULES[schedule]((step - warmup) / max(1, total - warmup))


def make_scheduler(
    optimizer: torch.optim.Optimizer, train: dict[str, Any], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    total = max(1, int(train["epochs"]) * steps_per_epoch)
    warmup = round(float(train["warmup_epochs"]) * steps_per_epoch)
    if train["schedule"] == "onecycle":
        warmup = max(warmup, int(0.3 * total))  # one-cycle always rises first (pct_start 0.3)
    warmup = min(warmup, total)
    schedule = train["schedule"]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, schedule)
    )
