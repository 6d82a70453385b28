"""`convbn`: the seeds' Model 3: three 3x3 conv layers with optional BatchNorm and optional bias.

conv 32w, 64w, 128w ('same'), each [+ BatchNorm] + ReLU + 2x2 max-pooling, then dropout,
dense `hidden` + ReLU, dropout and the 2K outputs; trained with Adam, as the seed did.
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

CHANNELS = (32, 64, 128)


def convbn_space(trial: Any) -> dict[str, Any]:
    return {
        "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "epochs": trial.suggest_int("epochs", 30, 150, step=30),
        "batchnorm": trial.suggest_categorical("batchnorm", [True, False]),
        "bias": trial.suggest_categorical("bias", [True, False]),
        "width": trial.suggest_categorical("width", [0.5, 1.0, 2.0]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        **seed_augment_space(trial),
        "brightness": trial.suggest_float("brightness", 0.0, 0.5),
    }


@register_model(
    "convbn",
    model_defaults={
        "batchnorm": True,
        "bias": False,
        "width": 1.0,
        "hidden": 500,
        "dropout": 0.2,
        "loss": "mse",
    },
    train_defaults=dict(SEED_RECIPE),
    search_space=convbn_space,
    cpu_speed=CPU_SPEED,
)
def build_convbn(
    num_keypoints: int,
    input_size: int,
    batchnorm: bool,
    bias: bool,
    width: float,
    hidden: int,
    dropout: float,
    loss: str,
) -> KeypointModel:
    hidden = int(hidden)
    layers: list[nn.Module] = []
    c_in = 1
    for base in CHANNELS:
        c_out = max(4, round(base * width))
        layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias))
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c_in = c_out
    features = nn.Sequential(*layers, nn.Flatten())
    body = nn.Sequential(
        features,
        nn.Dropout(dropout),
        nn.Linear(flat_features(features, input_size), hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )
    init_weights(body)
    network = nn.Sequential(body, regression_head(hidden, 2 * num_keypoints))
    return KeypointModel(network, RegressionCodec(num_keypoints, input_size, loss=loss))
