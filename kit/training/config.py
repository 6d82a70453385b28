"""A run's configuration: family defaults + loop defaults + overrides, validated and typed.

`resolve_config` is the one place where `--set key=value` settings, Optuna trial parameters and
family defaults meet; `parse_overrides` reads `--set` items.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

import torch

from kit.errors import KitError
from kit.models import get_family, list_models
from kit.models.registry import SHARED_MODEL_DEFAULTS
from kit.models.scaled_input import check_input_scale
from kit.training.augment import AugmentConfig
from kit.training.optim import OPTIMIZERS, SCHEDULES
from kit.training.speed import SPEED_DEFAULTS, Speed, family_cpu_speed, validate_speed
from kit.training.targets import DEFAULT_R2_THRESHOLD

KEEP_CHOICES = ("last", "best")

# Loop settings every family understands; a family's train_defaults override them.
LOOP_DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 1e-4,
    "momentum": 0.9,
    "batch_size": 64,
    "epochs": 30,
    "schedule": "cosine",
    "warmup_epochs": 1,
    # Which weights a fold keeps: "last" (honest: nothing is chosen on the rows the fold is
    # scored on) or "best" (the best validation epoch: CV then reads optimistic, see
    # docs/benchmarks.md "Epoch selection"). Early stopping (patience > 0) also peeks.
    "keep": "last",
    "patience": 0,  # epochs without a better validation score; 0 = no early stopping
    # Decay of an exponential moving average of the weights (kit.training.ema), which is then
    # what each epoch validates and each fold keeps, saves and predicts with; 0 = off.
    "ema": 0.0,
    "seed": 0,
    "tta": True,  # horizontal-flip test-time augmentation for OOF and test predictions
    **SPEED_DEFAULTS,  # channels_last, precision, compile (kit.training.speed)
    "eval_batch_size": 256,
    "impute_r2": DEFAULT_R2_THRESHOLD,  # used by --target-set impute
    # A pseudo-label set of `kit pseudo` (its id; "" = none): each fold also trains on the
    # set's labels where the truth is missing and on the test rows, at `pseudo_weight` each
    # (a true label weighs 1). Validation and CV use true labels only.
    "pseudo": "",
    "pseudo_weight": 0.5,
}


@dataclass(frozen=True)
class RunConfig:
    """A family plus its fully resolved model and train hyperparameters."""

    family: str
    model: dict[str, Any]
    train: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "model": dict(self.model), "train": dict(self.train)}

    def identity(self) -> dict[str, Any]:
        """What the run id hashes: `to_dict()` without the shared model settings at their
        neutral values, so that runs recorded before such a setting existed keep their ids."""
        model = {k: v for k, v in self.model.items() if SHARED_MODEL_DEFAULTS.get(k, object()) != v}
        return {**self.to_dict(), "model": model}

    @property
    def augment(self) -> AugmentConfig:
        return AugmentConfig.from_hparams(self.train)


def train_keys(family: str) -> dict[str, Any]:
    """Every train-side setting `family` accepts, with its default."""
    aug = {f.name: f.default for f in fields(AugmentConfig)}
    return {**LOOP_DEFAULTS, **aug, **get_family(family).train_defaults}


def resolve_config(
    family: str,
    overrides: dict[str, Any] | None = None,
    *,
    epochs: int | None = None,
    seed: int | None = None,
) -> RunConfig:
    """Family defaults + loop defaults + overrides (flat keys, e.g. from --set or Optuna)."""
    if family not in list_models():
        raise KitError(
            f"unknown model {family!r}", hint=f"valid: {', '.join(list_models()) or 'none'}"
        )
    fam = get_family(family)
    train = train_keys(family)
    overrides = dict(overrides or {})
    if epochs is not None:
        overrides["epochs"] = epochs
    if seed is not None:
        overrides["seed"] = seed
    unknown = sorted(set(overrides) - set(fam.model_defaults) - set(train))
    if unknown:
        valid = sorted({*fam.model_defaults, *train})
        raise KitError(
            f"unknown setting {', '.join(unknown)} for model {family!r}",
            hint=f"valid: {', '.join(valid)}",
        )
    model = dict(fam.model_defaults)
    for key, value in overrides.items():
        target = model if key in model else train
        target[key] = _coerce(key, value, target[key])
    if train["pseudo"] is None:  # --set pseudo=none
        train["pseudo"] = ""
    _validate_train(train)
    check_input_scale(model["input_scale"])  # a size the user gives: bounded before any work
    config = RunConfig(family, model, train)
    config.augment  # noqa: B018  (validates the augmentation settings now, not mid-run)
    return config


def _coerce(key: str, value: Any, default: Any) -> Any:
    """An override in its default's type, so `flip=0` and `flip=0.0` are the same run."""
    if isinstance(default, bool) or default is None or isinstance(value, bool):
        return value
    if isinstance(default, float) and isinstance(value, int):
        return float(value)
    if isinstance(default, int) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(default, int | float) and not isinstance(value, int | float | list | tuple):
        raise KitError(f"setting {key} must be a number, got {value!r}")
    return value


def _validate_train(train: dict[str, Any]) -> None:
    if train["optimizer"] not in OPTIMIZERS:
        raise KitError(
            f"unknown optimizer {train['optimizer']!r}", hint=f"valid: {', '.join(OPTIMIZERS)}"
        )
    if train["schedule"] not in SCHEDULES:
        raise KitError(
            f"unknown schedule {train['schedule']!r}", hint=f"valid: {', '.join(SCHEDULES)}"
        )
    if train["keep"] not in KEEP_CHOICES:
        raise KitError(
            f"setting keep must be one of {', '.join(KEEP_CHOICES)}, got {train['keep']!r}"
        )
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if not isinstance(train[key], int) or isinstance(train[key], bool) or train[key] < 1:
            raise KitError(f"setting {key} must be a positive integer, got {train[key]!r}")
    if not train["lr"] > 0:
        raise KitError(f"setting lr must be positive, got {train['lr']!r}")
    if not isinstance(train["pseudo"], str):
        raise KitError(
            f"setting pseudo must be a pseudo-label set id, got {train['pseudo']!r}",
            hint="see `kit pseudo COMP`",
        )
    weight = train["pseudo_weight"]
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < 1e9:
        raise KitError(f"setting pseudo_weight must be a number >= 0, got {weight!r}")
    ema = train["ema"]
    if isinstance(ema, bool) or not isinstance(ema, int | float) or not 0 <= ema < 1:
        raise KitError(
            f"setting ema must be a decay in [0, 1) (0 = off), got {ema!r}",
            hint="e.g. --set ema=0.999",
        )
    validate_speed(train)


def run_speed(config: RunConfig, device: torch.device) -> Speed:
    """The config's speed settings on `device`, "auto" resolved (kit.training.speed)."""
    return Speed.resolve(config.train, device, family_cpu_speed(config.family))


def parse_value(text: str) -> Any:
    """A --set value: JSON-ish ints, floats, bools (true/false, True/False), null; else a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | list) else text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """["lr=0.01", "flip=0", "optimizer=adamw"] -> {"lr": 0.01, "flip": 0, "optimizer": "adamw"}."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise KitError(f"--set {item!r} is not key=value", hint="e.g. --set lr=0.001")
        out[key.strip()] = parse_value(value)
    return out
