"""Small building blocks shared by the families (plain torch; channels_last and bf16 friendly)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv_bn_act(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Conv (no bias: BatchNorm follows) + BatchNorm + ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs); a 1x1 projection where the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity: stabler early training
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def res_stage(c_in: int, c_out: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(c_in, c_out, stride)]
    layers += [BasicBlock(c_out, c_out) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def flat_features(features: nn.Module, input_size: int) -> int:
    """Number of features `features` produces from one (1, 1, S, S) image (for a dense head)."""
    was_training = features.training
    features.eval()
    with torch.no_grad():
        n = features(torch.zeros(1, 1, input_size, input_size)).numel()
    features.train(was_training)
    return n


def regression_head(n_in: int, n_out: int) -> nn.Linear:
    """The final linear layer, zero-initialised: every model starts by predicting the centre."""
    head = nn.Linear(n_in, n_out)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    return head


def init_weights(module: nn.Module) -> None:
    """He (fan-in) init for ReLU layers: keeps activations' scale in nets without BatchNorm."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
