"""`resnet`: ResNet-18/34 (basic blocks) with a 1-channel stem and a regression head (CS194-26 p3).

Stems (`stem`):
    "imagenet" 7x7/s2 + 3x3 max-pool/s2 (stride 4): 96 px -> 24 px stage 1. The default: about
               4x cheaper than "light", and the better choice within a CPU budget
    "light"    3x3/s2 + 3x3 (stride 2): 96 px -> 48 px stage 1; stronger when compute is ample (GPU)
    "full"     3x3/s1: full resolution (slow on a CPU)
Stages have width x 1, 2, 4, 8 channels; then global average pooling (`pool="avg"`) or the
flattened last feature map (`pool="flatten"`, keeps the spatial layout), dropout, and a
zero-initialised linear layer predicting normalised coordinates.

Defaults were picked on a fkd-proxy split at a ~2-minute CPU budget per fold: batch 32 and light
augmentation beat batch 64 and stronger augmentation there (RMSE 2.36 vs 2.86 after 10 epochs).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from kit.errors import KitError
from kit.models.codec import RegressionCodec
from kit.models.layers import conv_bn_act, flat_features, init_weights, regression_head, res_stage
from kit.models.registry import (
    CPU_SPEED,
    MODERN_RECIPE,
    KeypointModel,
    augment_space,
    register_model,
    train_recipe,
)

BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
STEMS = ("light", "imagenet", "full")


def make_stem(kind: str, width: int) -> nn.Sequential:
    if kind == "light":
        return nn.Sequential(conv_bn_act(1, width, 3, 2), conv_bn_act(width, width, 3))
    if kind == "imagenet":
        return nn.Sequential(conv_bn_act(1, width, 7, 2), nn.MaxPool2d(3, 2, 1))
    if kind == "full":
        return conv_bn_act(1, width, 3)
    raise KitError(f"unknown resnet stem {kind!r}", hint=f"use one of {', '.join(STEMS)}")


def resnet_space(trial: Any) -> dict[str, Any]:
    return {
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "epochs": trial.suggest_int("epochs", 20, 100, step=10),
        "depth": trial.suggest_categorical("depth", [18, 34]),
        "width": trial.suggest_categorical("width", [16, 24, 32, 48, 64]),
        "stem": trial.suggest_categorical("stem", ["light", "imagenet"]),
        "pool": trial.suggest_categorical("pool", ["avg", "flatten"]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        # Above the competition's own size (kit.models.scaled_input): finer late stages.
        "input_scale": trial.suggest_categorical("input_scale", [1.0, 1.5, 2.0]),
        **augment_space(trial),
    }


@register_model(
    "resnet",
    model_defaults={
        "depth": 18,
        "width": 32,
        "stem": "imagenet",
        "pool": "avg",
        "dropout": 0.0,
        "loss": "smooth_l1",
    },
    # lr 8e-3 at batch 16 (was 4e-3 at 32): 8 epochs scored 2.058 against 2.105 on folds 0-1
    # (benchmarks/recipe_ablation.py, docs/benchmarks.md "Training recipe").
    train_defaults=train_recipe(MODERN_RECIPE, lr=8e-3, batch_size=16, weight_decay=0.05),
    search_space=resnet_space,
    cpu_speed=CPU_SPEED,
)
def build_resnet(
    num_keypoints: int,
    input_size: int,
    depth: int,
    width: int,
    stem: str,
    pool: str,
    dropout: float,
    loss: str,
) -> KeypointModel:
    depth, width = int(depth), int(width)
    if depth not in BLOCKS:
        raise KitError(f"resnet depth {depth} is not supported", hint=f"use {sorted(BLOCKS)}")
    layers: list[nn.Module] = [make_stem(stem, width)]
    c_in = width
    for i, blocks in enumerate(BLOCKS[depth]):
        c_out = width * 2**i
        layers.append(res_stage(c_in, c_out, blocks, stride=1 if i == 0 else 2))
        c_in = c_out
    if pool == "avg":
        layers.append(nn.AdaptiveAvgPool2d(1))
    elif pool != "flatten":
        raise KitError(f"unknown resnet pool {pool!r}", hint="use avg or flatten")
    layers += [nn.Flatten(), nn.Dropout(dropout)]
    body = nn.Sequential(*layers)
    init_weights(body)
    features = flat_features(body, input_size)
    network = nn.Sequential(body, regression_head(features, 2 * num_keypoints))
    return KeypointModel(network, RegressionCodec(num_keypoints, input_size, loss=loss))
