"""The training loop: one model, one fold, the whole dataset as one uint8 tensor on the device.

No DataLoader: each epoch shuffles row indices with a seeded generator, slices batches out of
the device tensor, converts them to float in [0, 1], augments them on the device
(`kit.training.augment.augment_batch`), and minimises the model codec's masked loss (weighted
per keypoint where the data carries weights: pseudo labels).
Early stopping watches the fold's validation score and keeps the best weights. With
``ema > 0`` an exponential moving average of the weights (kit.training.ema) is what is
validated, kept, saved and predicted with.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import KitError
from kit.metrics import primary
from kit.models import create_model
from kit.models.registry import KeypointModel
from kit.progress import Event, OnEvent, ignore
from kit.training.augment import AugmentConfig, augment_weighted
from kit.training.config import RunConfig, run_speed
from kit.training.device import DeviceData
from kit.training.ema import ModelEma
from kit.training.flip import flip_perm_tensor
from kit.training.optim import make_optimizer, make_scheduler
from kit.training.predict import predict_rows
from kit.training.speed import Speed
from kit.training.targets import SubModel


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
    run: str = ""  # the run id, where the caller gave it (progress views tell runs apart)

    def line(self) -> str:
        name = "" if self.submodel == "main" else f" {self.submodel}"
        return f"fold {self.fold}{name} epoch {self.epoch}/{self.epochs} val {self.val_score:.4f}"


@dataclass
class FitResult:
    model: KeypointModel  # best weights loaded, eval mode
    speed: Speed = field(default_factory=Speed)  # how it ran (predict the same way)
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_score: float = float("nan")
    last_score: float = float("nan")
    kept_epoch: int = 0  # the epoch whose weights `model` holds
    seconds: float = 0.0


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
    columns: Tensor  # which label columns of the device data this network learns
    flip_perm: Tensor
    augment: AugmentConfig
    batch_size: int
    shuffle: torch.Generator
    augment_generator: torch.Generator
    speed: Speed
    step_model: torch.nn.Module  # the model, or its torch.compile wrapper
    ema: ModelEma | None = None  # the weights' moving average (train setting ema > 0)

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
        decay = float(train.get("ema", 0.0))
        return cls(
            model=model,
            optimizer=optimizer,
            scheduler=make_scheduler(optimizer, train, max(1, train_rows // batch_size)),
            device=device,
            columns=torch.tensor(keypoints, device=device),
            flip_perm=flip_perm_tensor(comp, keypoints, device),
            augment=config.augment,
            batch_size=batch_size,
            shuffle=torch.Generator().manual_seed(seed),
            augment_generator=torch.Generator(device=device).manual_seed(seed + 1),
            speed=speed,
            step_model=torch.compile(model) if speed.compile else model,
            ema=ModelEma(model, decay) if decay > 0 else None,
        )

    @property
    def eval_model(self) -> KeypointModel:
        """The weights that are validated, kept and saved: the moving average when on."""
        return self.model if self.ema is None else self.ema.module

    def set_prior(self, mean_keypoints: Tensor) -> None:
        """The training rows' mean shape (K, 2) in pixels, for the codec of the model and of
        its moving average (which must not average it in from the zeros it started at)."""
        self.model.codec.set_prior(mean_keypoints)
        if self.ema is not None:
            self.ema.module.codec.set_prior(mean_keypoints)

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
            weights = None if data.weights is None else data.weights[idx][:, self.columns]
            loss_sum += self.step(data.images[idx], data.keypoints[idx][:, self.columns], weights)
        return float(loss_sum) / steps

    def step(self, images_u8: Tensor, points: Tensor, weights: Tensor | None = None) -> Tensor:
        """One optimisation step on a uint8 batch (B, 1, S, S) and its keypoints (B, K, 2);
        `weights` (B, K): each keypoint's weight in the loss (None: all the same)."""
        images = images_u8.float().div_(255.0)
        images, points, weights = augment_weighted(
            images, points, weights, self.flip_perm, self.augment, self.augment_generator
        )
        images = self.speed.layout(images)
        targets, mask = self.model.codec.encode(points)
        with self.speed.autocast(self.device):
            output = self.step_model(images)
        loss = self.model.codec.loss(output, targets, mask, weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
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
    on_event: OnEvent = ignore,
    sources: np.ndarray | None = None,
    run: str = "",
) -> FitResult:
    """Train `sub`'s network on `train_rows` (its label columns of `data.keypoints`),
    scoring each epoch on the competition metric of the keypoints it contributes over
    `val_rows` (whose truth is `val_truth`). It keeps the last epoch's weights, or with
    ``keep=best`` the best epoch's, and stops early only with ``patience > 0``. With ``ema > 0``
    the weights scored, kept and returned are the moving average's. A sub-model with heads
    needs `sources`, the label source of each row of `data` (kit.training.sources)."""
    if np.intersect1d(train_rows, val_rows).size:
        raise AssertionError(f"fold {fold}: a validation row is also a training row")
    if len(train_rows) < 2:
        raise KitError(
            f"fold {fold} ({sub.name}): only {len(train_rows)} training rows have labels",
            hint="use more data or another --target-set",
        )
    train = config.train
    epochs, patience = int(train["epochs"]), int(train["patience"])
    trainer = Trainer.create(comp, config, sub.columns, len(train_rows), device, seed)
    model = trainer.eval_model  # what is scored and kept (the EMA's weights when on)
    rows = torch.from_numpy(train_rows).to(device)
    trainer.set_prior(data.keypoints[rows][:, trainer.columns].nanmean(dim=0))
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
        pred = sub.pick(pred, None if sources is None else sources[val_rows])
        score = primary(comp, pred[:, scored_cols], val_truth, keypoints=scored)
        if _improves(score, result.best_score):
            result.best_score, result.best_epoch = score, epoch
            if train["keep"] == "best":
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
        report = EpochReport(
            fold, sub.name, epoch, epochs, train_loss, score, result.best_score, seconds, run
        )
        on_event(Event("train", "epoch", epoch, epochs, report.line(), report))
        if patience > 0 and epoch - result.best_epoch >= patience:
            break
    result.last_score = score
    result.kept_epoch = epoch
    if train["keep"] == "best" and best_state is not None:
        model.load_state_dict(best_state)
        result.kept_epoch = result.best_epoch
    model.eval()
    result.seconds = time.perf_counter() - started
    return result


def _improves(score: float, best: float) -> bool:
    """Lower is better. The first epoch always counts; so does a NaN score (no labelled
    validation row for these keypoints), which keeps the latest weights."""
    return math.isnan(score) or math.isnan(best) or score < best
