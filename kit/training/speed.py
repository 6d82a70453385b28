"""How a network runs on its device: memory format, precision and graph compilation.

Three train settings choose it, each "auto" by default:

- ``channels_last``: NHWC activations (auto: on with CUDA, else the family's CPU default);
- ``precision``: ``fp32`` or ``bf16`` autocast (auto: bf16 with CUDA, else the family's CPU
  default);
- ``compile``: ``torch.compile`` of the training forward pass (auto: off; its compile time is
  paid again in every process and for every new shape, so by most tuning trials).

"auto" on a CPU reads the family's ``cpu_speed`` (declared in its ``register_model`` call), which
holds only what `benchmarks/train_throughput.py` measured to be faster there (docs/benchmarks.md,
"CPU speed"). The resolved settings go into each fold's record, so a manifest says how it ran.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from kit.errors import KitError
from kit.models import get_family, list_models

SPEED_DEFAULTS: dict[str, Any] = {"channels_last": "auto", "precision": "auto", "compile": "auto"}
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Speed:
    """Resolved speed settings for one network on one device."""

    channels_last: bool = False
    bf16: bool = False
    compile: bool = False

    @classmethod
    def resolve(
        cls, train: dict[str, Any], device: torch.device, cpu_defaults: dict[str, Any] | None = None
    ) -> Speed:
        """The train settings with every "auto" replaced by the device's (or family's) default."""
        validate_speed(train)
        auto = cls.auto(device, cpu_defaults)
        precision = train.get("precision", "auto")
        if precision == "bf16" and device.type not in ("cuda", "cpu"):  # MPS: torch >= 2.5, partial
            raise KitError(f"precision bf16 runs on cuda or cpu, not {device.type}")
        return cls(
            channels_last=_pick(train.get("channels_last", "auto"), auto.channels_last),
            bf16=auto.bf16 if precision == "auto" else precision == "bf16",
            compile=_pick(train.get("compile", "auto"), auto.compile),
        )

    @classmethod
    def auto(cls, device: torch.device, cpu_defaults: dict[str, Any] | None = None) -> Speed:
        """channels_last and bf16 on CUDA; on a CPU the family's measured winners."""
        if device.type == "cuda":
            return cls(channels_last=True, bf16=True)
        if device.type == "cpu" and cpu_defaults:
            return cls(**cpu_defaults)
        return cls()

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=torch.bfloat16)

    def layout(self, images: Tensor) -> Tensor:
        """A batch in the network's memory format."""
        if self.channels_last:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def prepare(self, model: nn.Module) -> nn.Module:
        """`model` in the memory format (in place); returns it."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def to_dict(self) -> dict[str, bool]:
        return asdict(self)


def family_cpu_speed(family: str) -> dict[str, bool]:
    """A registered family's measured CPU speed settings; none for anything else."""
    return get_family(family).cpu_speed if family in list_models() else {}


def _pick(value: Any, auto: bool) -> bool:
    return auto if value == "auto" else bool(value)


def validate_speed(train: dict[str, Any]) -> None:
    """One-line errors for a speed setting that is not one of its values."""
    for key in ("channels_last", "compile"):
        value = train.get(key, "auto")
        if value != "auto" and not isinstance(value, bool):
            raise KitError(f"setting {key} must be auto, true or false, got {value!r}")
    if train.get("precision", "auto") not in PRECISIONS:
        raise KitError(
            f"setting precision must be one of {', '.join(PRECISIONS)}, got {train['precision']!r}"
        )
