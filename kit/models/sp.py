"""`sp`: the seeds' Model 1 (D. Nouri's classic FKD net): 3 conv + 2x2 max-pool, two dense 500.

conv 3x3/32, 2x2/64, 2x2/128 ('valid'), each followed by ReLU and 2x2 max-pooling, then
dense 500 -> 500 -> 2K with ReLU, and the seed's recipe: SGD with Nesterov momentum 0.9,
lr 0.01, batch 128, horizontal flips.
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

KERNELS = (3, 2, 2)
CHANNELS = (32, 64, 128)


def sp_space(trial: Any) -> dict[str, Any]:
    return {
        "lr": trial.suggest_float("lr", 1e-3, 5e-2, log=True),
        "momentum": trial.suggest_float("momentum", 0.8, 0.95),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [64, 128]),
        "epochs": trial.suggest_int("epochs", 30, 150, step=30),
        "hidden": trial.suggest_categorical("hidden", [256, 500, 1000]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        **seed_augment_space(trial),
    }


@register_model(
    "sp",
    model_defaults={"hidden": 500, "dropout": 0.0, "loss": "mse"},
    train_defaults=train_recipe(SEED_RECIPE, optimizer="sgd", lr=0.01, batch_size=128),
    search_space=sp_space,
    cpu_speed=CPU_SPEED,
)
def build_sp(
    num_keypoints: int, input_size: int, hidden: int, dropout: float, loss: str
) -> KeypointModel:
    hidden = int(hidden)
    layers: list[nn.Module] = []
    c_in = 1
    for kernel, c_out in zip(KERNELS, CHANNELS, strict=True):
        layers += [nn.Conv2d(c_in, c_out, kernel), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c_in = c_out
    features = nn.Sequential(*layers, nn.Flatten())
    dense = nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(flat_features(features, input_size), hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.ReLU(inplace=True),
    )
    body = nn.Sequential(features, dense)
    init_weights(body)
    network = nn.Sequential(body, regression_head(hidden, 2 * num_keypoints))
    return KeypointModel(network, RegressionCodec(num_keypoints, input_size, loss=loss))
