"""`lenet`: the seeds' Model 2, LeNet-5 style.

conv 5x5/6 + ReLU + 2x2 average pooling, conv 5x5/16 + ReLU + 2x2 average pooling, then three
dense layers (120 -> 84 -> 2K); trained with Adam, as the seed did. `width` multiplies the
channel and dense widths.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from kit.models.codec import RegressionCodec
from kit.models.layers import flat_features, init_weights, regression_head
from kit.models.registry import (
    CPU_SPEED,
    SEED_RECIPE,
    KeypointModel,
    register_model,
    seed_augment_space,
)


def lenet_space(trial: Any) -> dict[str, Any]:
    return {
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "epochs": trial.suggest_int("epochs", 30, 150, step=30),
        "width": trial.suggest_categorical("width", [1, 2, 4]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        **seed_augment_space(trial),
    }


@register_model(
    "lenet",
    model_defaults={"width": 1, "dropout": 0.0, "loss": "mse"},
    train_defaults=dict(SEED_RECIPE),
    search_space=lenet_space,
    cpu_speed=CPU_SPEED,
)
def build_lenet(
    num_keypoints: int, input_size: int, width: float, dropout: float, loss: str
) -> KeypointModel:
    c1, c2, d1, d2 = (round(n * width) for n in (6, 16, 120, 84))
    features = nn.Sequential(
        nn.Conv2d(1, c1, 5), nn.ReLU(inplace=True), nn.AvgPool2d(2),
        nn.Conv2d(c1, c2, 5), nn.ReLU(inplace=True), nn.AvgPool2d(2),
        nn.Flatten(),
    )  # fmt: skip
    body = nn.Sequential(
        features,
        nn.Linear(flat_features(features, input_size), d1), nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(d1, d2), nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )  # fmt: skip
    init_weights(body)
    network = nn.Sequential(body, regression_head(d2, 2 * num_keypoints))
    return KeypointModel(network, RegressionCodec(num_keypoints, input_size, loss=loss))
