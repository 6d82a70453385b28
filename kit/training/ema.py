"""An exponential moving average (EMA) of a network's weights, updated after every optimizer step.

Like timm's ModelEmaV3, reduced to what kit needs: a frozen copy of the model whose floating-point
parameters *and buffers* (BatchNorm running statistics, a codec's prior or temperature) follow
the trained ones; integer buffers (BatchNorm's batch counter) are copied. The copy is a plain
`KeypointModel`, so its state_dict loads into a fresh model like the trained one's.

The decay is warmed up, ``min(decay, (1 + n) / (10 + n))`` after n updates: a short run (a few
hundred steps) would otherwise still average in mostly its random initial weights.
"""

from __future__ import annotations

import copy
import itertools

import torch
from torch import nn


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay of update number `updates` (0-based)."""
    return min(decay, (1 + updates) / (10 + updates))


class ModelEma:
    """EMA weights of `model` in `module` (eval mode, no gradients), `decay` in (0, 1)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s current weights (the network being trained,
        not its torch.compile wrapper: the two share their tensors)."""
        weight = 1.0 - warmed_up_decay(self.decay, self.updates)
        self.updates += 1
        averaged, current = [], []
        # Tensors are looked up anew each time: Module.to (a memory format) may swap them.
        pairs = zip(_tensors(self.module), _tensors(model), strict=True)
        for ema_value, value in pairs:
            if ema_value.is_floating_point():
                averaged.append(ema_value)
                current.append(value)
            else:
                ema_value.copy_(value)
        if averaged:
            torch._foreach_lerp_(averaged, current, weight)


def _tensors(module: nn.Module):
    return itertools.chain(module.parameters(), module.buffers())
