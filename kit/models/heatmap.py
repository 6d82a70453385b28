"""`heatmap`: a small residual U-Net with one heatmap per keypoint, decoded by soft-argmax.

The encoder first reaches the output resolution S / stride (stride 1, 2 or 4), then halves it
`depth` times (widths width x 1, 2, 4, 8, capped); the decoder upsamples back with skip
connections, and a 1x1 conv gives K logit maps. HeatmapCodec turns them into sub-pixel
coordinates (integral regression) and trains them with Gaussian targets plus a coordinate L1.

Defaults (stride 4, depth 3, width 16: 24 px maps at 96 px, 0.9 M parameters) fit a CPU budget;
soft-argmax keeps them sub-pixel. On a fkd-proxy split, 16 epochs (~2 CPU minutes) gave RMSE
2.05, against 2.47 for `lenet` after 40 epochs and 2.36 for `resnet` after 10 in similar time.
With more compute, stride 2 and width 24-32 are the next steps up.

`decode` picks how predictions read the maps: "soft_argmax" (as in training) or "dark" (the
argmax refined by a Taylor expansion of the smoothed log-map; HeatmapCodec.dark_cells). It does
not change training, so a trained model can be rebuilt with the other decode and its weights.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kit.errors import KitError
from kit.models.codec import HEATMAP_DECODES, HeatmapCodec
from kit.models.layers import BasicBlock, conv_bn_act, init_weights
from kit.models.registry import (
    CPU_SPEED,
    MODERN_RECIPE,
    KeypointModel,
    augment_space,
    register_model,
    train_recipe,
)

MAX_WIDTH_FACTOR = 8


def make_stem(stride: int, width: int) -> nn.Sequential:
    """Reach S / stride with cheap plain convs, then one residual block."""
    if stride not in (1, 2, 4):
        raise KitError(f"heatmap stride {stride} is not supported", hint="use 1, 2 or 4")
    layers: list[nn.Module] = [conv_bn_act(1, width, 3, 1 if stride == 1 else 2)]
    if stride == 4:
        layers.append(conv_bn_act(width, width, 3, 2))
    return nn.Sequential(*layers, BasicBlock(width, width))


class UNet(nn.Module):
    def __init__(self, num_keypoints: int, stride: int, width: int, depth: int):
        super().__init__()
        widths = [width * min(2**level, MAX_WIDTH_FACTOR) for level in range(depth + 1)]
        self.stem = make_stem(stride, width)
        self.down = nn.ModuleList(
            nn.Sequential(BasicBlock(c_in, c_out, stride=2), BasicBlock(c_out, c_out))
            for c_in, c_out in itertools.pairwise(widths)
        )
        self.up = nn.ModuleList(
            nn.Sequential(conv_bn_act(c_deep + c_skip, c_skip), conv_bn_act(c_skip, c_skip))
            for c_deep, c_skip in zip(widths[1:], widths[:-1], strict=True)
        )
        self.head = nn.Conv2d(width, num_keypoints, 1)
        init_weights(self)
        nn.init.zeros_(self.head.weight)  # uniform maps at first: every keypoint starts centred
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(skips[-1]))
        x = skips.pop()
        for up in reversed(self.up):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, skip], dim=1))
        return self.head(x)


def heatmap_space(trial: Any) -> dict[str, Any]:
    return {
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-1, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64]),
        "epochs": trial.suggest_int("epochs", 20, 100, step=10),
        "width": trial.suggest_categorical("width", [16, 24, 32, 48]),
        "depth": trial.suggest_int("depth", 2, 3),
        # Not stride 1: at width 48 on ibug-68's 128 px faces one such trial took more than
        # 24 GB of memory (the portfolio build); stride 2 already gives 64 px maps there.
        "stride": trial.suggest_categorical("stride", [2, 4]),
        "sigma": trial.suggest_float("sigma", 1.0, 4.0),
        "heatmap_weight": trial.suggest_float("heatmap_weight", 0.1, 10.0, log=True),
        "decode": trial.suggest_categorical("decode", list(HEATMAP_DECODES)),
        **augment_space(trial),
    }


@register_model(
    "heatmap",
    head="heatmap",
    model_defaults={
        "stride": 4,
        "width": 16,
        "depth": 3,
        "sigma": 2.0,
        "beta": 1.0,
        "learn_beta": False,
        "heatmap_loss": "kl",
        "heatmap_weight": 1.0,
        "coord_weight": 1.0,
        "decode": "soft_argmax",
    },
    # lr 8e-3 at batch 16 (was 2e-3 at 32): 11 epochs scored CV 1.921 against 2.431, 6 epochs
    # 2.024 (benchmarks/recipe_ablation.py, docs/benchmarks.md "Training recipe").
    train_defaults=train_recipe(MODERN_RECIPE, lr=8e-3, batch_size=16, weight_decay=1e-2),
    search_space=heatmap_space,
    cpu_speed=CPU_SPEED,
)
def build_heatmap(
    num_keypoints: int,
    input_size: int,
    stride: int,
    width: int,
    depth: int,
    sigma: float,
    beta: float,
    learn_beta: bool,
    heatmap_loss: str,
    heatmap_weight: float,
    coord_weight: float,
    decode: str,
) -> KeypointModel:
    stride, width, depth = int(stride), int(width), int(depth)
    if input_size // stride // 2**depth < 2:
        raise KitError(
            f"heatmap depth {depth} at stride {stride} shrinks a {input_size} px input below 2 px",
            hint="lower depth or stride",
        )
    codec = HeatmapCodec(
        num_keypoints,
        input_size,
        stride=stride,
        sigma=sigma,
        beta=beta,
        learn_beta=learn_beta,
        heatmap_loss=heatmap_loss,
        heatmap_weight=heatmap_weight,
        coord_weight=coord_weight,
        decode=decode,
    )
    return KeypointModel(UNet(num_keypoints, stride, width, depth), codec)
