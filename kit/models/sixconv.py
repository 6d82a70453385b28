"""`sixconv`: a class project's small keypoint net: six conv layers of 12 to 32 channels.

conv 5x5/12, 5x5/16, then 3x3/20, 3x3/24, 3x3/28, 3x3/32 ('same'), each followed by ReLU and,
as the class did, 2x2 max-pooling; a pool is left out once the map would fall under MIN_MAP px,
so every input size works (96 px ends at 6x6, 128 px and 64 px at 4x4) and the dense layers stay
small. Then two dense layers: `hidden` + ReLU, and the 2K outputs (zero-initialised, like
lenet's). 5x5 first: a wider view at full resolution, cheap at 12-16 channels. Trained with Adam
at lr 1e-3, as the class did. `width` multiplies the channels. Not in kit run's portfolio
(kit/models/portfolio.toml) until a learning curve is measured; its CPU speed settings are
the other plain conv nets' (registry.CPU_SPEED), not measured for it.
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
    train_recipe,
)

KERNELS = (5, 5, 3, 3, 3, 3)
CHANNELS = (12, 16, 20, 24, 28, 32)
MIN_MAP = 4  # no pooling below this many pixels a side


def sixconv_space(trial: Any) -> dict[str, Any]:
    return {
        "lr": trial.suggest_float("lr", 3e-4, 3e-3, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
        "epochs": trial.suggest_int("epochs", 20, 100, step=20),
        "hidden": trial.suggest_categorical("hidden", [128, 256, 512]),
        "width": trial.suggest_categorical("width", [1.0, 1.5, 2.0]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        **seed_augment_space(trial),
    }


@register_model(
    "sixconv",
    model_defaults={"width": 1.0, "hidden": 256, "dropout": 0.0, "loss": "mse"},
    train_defaults=train_recipe(SEED_RECIPE, batch_size=32, epochs=60),
    search_space=sixconv_space,
    cpu_speed=CPU_SPEED,
)
def build_sixconv(
    num_keypoints: int, input_size: int, width: float, hidden: int, dropout: float, loss: str
) -> KeypointModel:
    hidden = int(hidden)
    layers: list[nn.Module] = []
    c_in, size = 1, input_size
    for kernel, base in zip(KERNELS, CHANNELS, strict=True):
        c_out = max(4, round(base * width))
        layers += [nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2), nn.ReLU(inplace=True)]
        if size // 2 >= MIN_MAP:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        c_in = c_out
    features = nn.Sequential(*layers, nn.Flatten())
    body = nn.Sequential(
        features,
        nn.Linear(flat_features(features, input_size), hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )
    init_weights(body)
    network = nn.Sequential(body, regression_head(hidden, 2 * num_keypoints))
    return KeypointModel(network, RegressionCodec(num_keypoints, input_size, loss=loss))
