"""The training loop: one model, one fold, the whole dataset as one uint8 tensor on the device.

No DataLoader: each epoch shuffles row indices with a seeded generator, slices batches out of
the device tensor, converts them to float in [0, 1], augments them on the device
(`kit.training.augment.augment_batch`), and minimises the model codec's masked loss.
Early stopping watches the fold's validation score and keeps the best weights.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import KitError
from kit.metrics import primary
from kit.models import create_model, get_family, list_models
from kit.models.registry import KeypointModel
from kit.training.augment import AugmentConfig, augment_batch
from kit.training.predict import predict_rows
from kit.training.speed import SPEED_DEFAULTS, Speed, family_cpu_speed, validate_speed
from kit.training.targets import DEFAULT_R2_THRESHOLD, SubModel

OPTIMIZERS = ("adamw", "sgd", "adam")
SCHEDULES = ("cosine", "onecycle", "none")

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
    "patience": 10,  # epochs without a better validation score; 0 = no early stopping
    "seed": 0,
    "tta": True,  # horizontal-flip test-time augmentation for OOF and test predictions
    **SPEED_DEFAULTS,  # channels_last, precision, compile (kit.training.speed)
    "eval_batch_size": 256,
    "impute_r2": DEFAULT_R2_THRESHOLD,  # used by --target-set impute
}


@dataclass(frozen=True)
class RunConfig:
    """A family plus its fully resolved model and train hyperparameters."""

    family: str
    model: dict[str, Any]
    train: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "model": dict(self.model), "train": dict(self.train)}

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
    _validate_train(train)
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
        raise KitError(f"unknown optimizer {train['optimizer']!r}", hint=f"valid: {OPTIMIZERS}")
    if train["schedule"] not in SCHEDULES:
        raise KitError(f"unknown schedule {train['schedule']!r}", hint=f"valid: {SCHEDULES}")
    for key in ("epochs", "batch_size", "eval_batch_size"):
        if not isinstance(train[key], int) or isinstance(train[key], bool) or train[key] < 1:
            raise KitError(f"setting {key} must be a positive integer, got {train[key]!r}")
    if not train["lr"] > 0:
        raise KitError(f"setting lr must be positive, got {train['lr']!r}")
    validate_speed(train)


def resolve_device(name: str | None = None) -> torch.device:
    """CUDA, then MPS, then CPU; or the named device (an unavailable one is an error)."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise KitError(
            f"unknown device {name!r}", hint="use auto, cpu, cuda, cuda:N or mps"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KitError("--device cuda: no CUDA GPU is available", hint="use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise KitError("--device mps: MPS is not available", hint="use --device cpu")
    return device


THREADS_ENV = "KIT_THREADS"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours cgroup/affinity limits
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def configure_cpu_threads() -> int:
    """Intra-op threads for CPU work: $KIT_THREADS, else the CPUs this process may use minus
    the tasks other processes are running on them now (at least 1).

    Why not always every core: on a shared machine, OpenMP threads that outnumber the idle
    cores spin-wait on each other; on this project's busy 2-core VM a ResNet training step took
    8 s with 2 threads and 0.5 s with 1.
    """
    cpus = available_cpus()
    if os.environ.get(THREADS_ENV, "").strip():
        try:
            threads = int(os.environ[THREADS_ENV])
        except ValueError:
            raise KitError(f"${THREADS_ENV} must be a whole number") from None
    else:
        threads = round(cpus - _load_of_others())
    torch.set_num_threads(max(1, min(cpus, threads)))
    return torch.get_num_threads()


def _load_of_others(samples: int = 5) -> float:
    """Runnable tasks other than this one right now (median of a few /proc/loadavg reads);
    the 1-minute load average where /proc is absent."""
    path = Path("/proc/loadavg")
    if not path.is_file():
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    counts = []
    for _ in range(samples):
        running = int(path.read_text().split()[3].split("/")[0])
        counts.append(running - 1)  # the reader itself is running
        time.sleep(0.005)
    return float(np.median(counts))


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


@dataclass
class EpochReport:
    """What the loop tells its callback after each epoch (tune prunes on `val_score`)."""

    fold: int
    submodel: str
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    val_score: float
    best_score: float
    seconds: float


EpochCallback = Callable[[EpochReport], None]


@dataclass
class FitResult:
    model: KeypointModel  # best weights loaded, eval mode
    speed: Speed = field(default_factory=Speed)  # how it ran (predict the same way)
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("nan")
    seconds: float = 0.0


def device_images(images: np.ndarray, device: torch.device) -> Tensor:
    """uint8 (N, S, S) -> uint8 (N, 1, S, S) on `device`: the whole split, 1 byte per pixel."""
    return torch.from_numpy(np.ascontiguousarray(images, np.uint8)).unsqueeze(1).to(device)


@dataclass
class DeviceData:
    """A split as device tensors: images uint8 (N, 1, S, S), keypoints float32 (N, K, 2)."""

    images: Tensor
    keypoints: Tensor

    @classmethod
    def from_arrays(cls, images: np.ndarray, keypoints: np.ndarray, device: torch.device):
        keypoints = torch.from_numpy(np.ascontiguousarray(keypoints, np.float32))
        return cls(device_images(images, device), keypoints.to(device))


def make_optimizer(model: torch.nn.Module, train: dict[str, Any]) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    lr, wd = float(train["lr"]), float(train["weight_decay"])
    if train["optimizer"] == "sgd":
        momentum = float(train["momentum"])
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=wd
        )
    if train["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based), per-step schedules."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "none":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    # one-cycle's annealing phase (its rise is the warmup): cosine from 1 down to 1/1e4
    return 1e-4 + (1 - 1e-4) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


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


def run_speed(config: RunConfig, device: torch.device) -> Speed:
    """The config's speed settings on `device`, "auto" resolved (kit.training.speed)."""
    return Speed.resolve(config.train, device, family_cpu_speed(config.family))


def build_model(
    comp: Competition,
    config: RunConfig,
    keypoints: tuple[int, ...],
    device: torch.device,
    speed: Speed,
) -> KeypointModel:
    model = create_model(config.family, len(keypoints), comp.input_size, **config.model)
    return speed.prepare(model.to(device))


@dataclass
class Trainer:
    """The optimisation state of one network; `epoch` runs one pass over given rows."""

    model: KeypointModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    device: torch.device
    columns: Tensor  # which keypoint columns of the device data this network learns
    flip_perm: Tensor
    augment: AugmentConfig
    batch_size: int
    shuffle: torch.Generator
    augment_generator: torch.Generator
    speed: Speed
    step_model: torch.nn.Module  # the model, or its torch.compile wrapper

    @classmethod
    def create(
        cls,
        comp: Competition,
        config: RunConfig,
        keypoints: tuple[int, ...],
        train_rows: int,
        device: torch.device,
        seed: int,
    ) -> Trainer:
        train = config.train
        seed_everything(seed)
        speed = run_speed(config, device)
        model = build_model(comp, config, keypoints, device, speed)
        batch_size = min(int(train["batch_size"]), train_rows)
        optimizer = make_optimizer(model, train)
        return cls(
            model=model,
            optimizer=optimizer,
            scheduler=make_scheduler(optimizer, train, max(1, train_rows // batch_size)),
            device=device,
            columns=torch.tensor(keypoints, device=device),
            flip_perm=_flip_perm(comp, keypoints, device),
            augment=config.augment,
            batch_size=batch_size,
            shuffle=torch.Generator().manual_seed(seed),
            augment_generator=torch.Generator(device=device).manual_seed(seed + 1),
            speed=speed,
            step_model=torch.compile(model) if speed.compile else model,
        )

    def epoch(self, data: DeviceData, rows: Tensor) -> float:
        """One shuffled pass over `rows` (a device tensor); the mean training loss.

        The last partial batch is dropped (a batch of 1 breaks BatchNorm); the loss is summed
        on the device and read once per epoch, so the GPU never waits on the host per step.
        """
        self.model.train()
        order = rows[torch.randperm(len(rows), generator=self.shuffle).to(self.device)]
        steps = max(1, len(rows) // self.batch_size)
        loss_sum = torch.zeros((), device=self.device)
        for step in range(steps):
            idx = order[step * self.batch_size : (step + 1) * self.batch_size]
            loss_sum += self.step(data.images[idx], data.keypoints[idx][:, self.columns])
        return float(loss_sum) / steps

    def step(self, images_u8: Tensor, points: Tensor) -> Tensor:
        """One optimisation step on a uint8 batch (B, 1, S, S) and its keypoints (B, K, 2)."""
        images = images_u8.float().div_(255.0)
        images, points = augment_batch(
            images, points, self.flip_perm, self.augment, generator=self.augment_generator
        )
        images = self.speed.layout(images)
        targets, mask = self.model.codec.encode(points)
        with self.speed.autocast(self.device):
            output = self.step_model(images)
        loss = self.model.codec.loss(output, targets, mask)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach()


def fit(
    comp: Competition,
    config: RunConfig,
    sub: SubModel,
    data: DeviceData,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    val_truth: KeypointData,
    *,
    device: torch.device,
    seed: int,
    fold: int = 0,
    on_epoch: EpochCallback | None = None,
) -> FitResult:
    """Train `sub`'s network on `train_rows` (its keypoint columns of `data.keypoints`) and
    early-stop on the competition metric of the keypoints it contributes, over `val_rows`
    (whose truth is `val_truth`)."""
    if np.intersect1d(train_rows, val_rows).size:
        raise AssertionError(f"fold {fold}: a validation row is also a training row")
    if len(train_rows) < 2:
        raise KitError(
            f"fold {fold} ({sub.name}): only {len(train_rows)} training rows have labels",
            hint="use more data or another --target-set",
        )
    train = config.train
    epochs, patience = int(train["epochs"]), int(train["patience"])
    trainer = Trainer.create(comp, config, sub.keypoints, len(train_rows), device, seed)
    model = trainer.model
    rows = torch.from_numpy(train_rows).to(device)
    model.codec.set_prior(data.keypoints[rows][:, trainer.columns].nanmean(dim=0))
    scored = list(sub.contributes)
    scored_cols = [sub.keypoints.index(k) for k in scored]
    result = FitResult(model=model, speed=trainer.speed)
    best_state: dict[str, Tensor] | None = None
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        train_loss = trainer.epoch(data, rows)
        if not math.isfinite(train_loss):
            raise KitError(
                f"training diverged (loss {train_loss}) in fold {fold} ({sub.name}), epoch {epoch}",
                hint="lower lr (--set lr=...) or raise warmup_epochs",
            )
        batch = int(train["eval_batch_size"])
        pred = predict_rows(
            model, data.images, val_rows, device, batch_size=batch, speed=trainer.speed
        )
        score = primary(comp, pred[:, scored_cols], val_truth, keypoints=scored)
        if _improves(score, result.best_score):
            result.best_score, result.best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        seconds = time.perf_counter() - t0
        lr = trainer.optimizer.param_groups[0]["lr"]
        result.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_score": score,
                "lr": lr,
                "seconds": seconds,
            }
        )
        if on_epoch is not None:
            report = EpochReport(
                fold, sub.name, epoch, epochs, train_loss, score, result.best_score, seconds
            )
            on_epoch(report)
        if patience > 0 and epoch - result.best_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - started
    return result


def _improves(score: float, best: float) -> bool:
    """Lower is better. The first epoch always counts; so does a NaN score (no labelled
    validation row for these keypoints), which keeps the latest weights."""
    return math.isnan(score) or math.isnan(best) or score < best


def flip_permutation(comp: Competition, keypoints: tuple[int, ...]) -> list[int] | None:
    """The flip permutation as columns of `keypoints`, or None if a flip partner is absent."""
    full = comp.flip_permutation()
    column = {k: i for i, k in enumerate(keypoints)}
    if any(full[k] not in column for k in keypoints):
        return None
    return [column[full[k]] for k in keypoints]


def check_flip(comp: Competition, config: RunConfig, keypoints: tuple[int, ...]) -> None:
    """Flip augmentation and flip TTA need every flip partner among the trained keypoints."""
    if flip_permutation(comp, keypoints) is not None:
        return
    if config.augment.flip > 0 or config.train["tta"]:
        full = comp.flip_permutation()
        missing = sorted(
            {comp.keypoint_names[full[k]] for k in keypoints}
            - {comp.keypoint_names[k] for k in keypoints}
        )
        raise KitError(
            f"the keypoint subset lacks the flip partners {', '.join(missing)}",
            hint="add them to --keypoints, or --set flip=0 --set tta=false",
        )


def _flip_perm(comp: Competition, keypoints: tuple[int, ...], device: torch.device) -> Tensor:
    perm = flip_permutation(comp, keypoints) or list(range(len(keypoints)))  # no flip then
    return torch.tensor(perm, dtype=torch.long, device=device)


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
