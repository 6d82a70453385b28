"""The model registry (timm-style): a family registers a builder, its defaults and search space.

    @register_model("sp", model_defaults={...}, train_defaults={...}, search_space=sp_space)
    def build_sp(num_keypoints: int, input_size: int, dropout: float) -> KeypointModel: ...

    model = create_model("sp", num_keypoints=15, input_size=96, dropout=0.1)

A builder's keyword hyperparameters must be exactly its `model_defaults` keys, and a key may not
be both a model and a train hyperparameter, so a flat dict of overrides (``--set key=value``,
an Optuna trial) splits unambiguously with `ModelFamily.split`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from kit.errors import KitError
from kit.models.codec import KeypointCodec
from kit.models.scaled_input import ScaledCodec, Upsample, scaled_size

if TYPE_CHECKING:
    import optuna

HEADS = ("regression", "heatmap")
SIZE_ARGS = ("num_keypoints", "input_size")
# What a family may declare faster on a CPU than the plain default (kit.training.speed.Speed).
CPU_SPEED_KEYS = ("channels_last", "bf16", "compile")
# Measured on a 2-core AVX2 CPU (benchmarks/train_throughput.py, docs/benchmarks.md "CPU speed"):
# channels_last trained every family 9-44 % faster; bf16 autocast was 4-15x slower (no native
# bf16); torch.compile ranged from -28 % to +25 % and cost 11-63 s of compiling per process and
# shape. The five measured families declare this (sixconv too, not yet measured: a plain
# conv + max-pool + dense net like sp and convbn); a family that measures otherwise declares
# its own.
CPU_SPEED: dict[str, bool] = {"channels_last": True}
# Model settings every family accepts, handled here rather than by its builder, at the values
# that leave a model as it was before the setting existed (kit.models.scaled_input).
SHARED_MODEL_DEFAULTS: dict[str, Any] = {"input_scale": 1.0}


class KeypointModel(nn.Module):
    """Every family's model: a network producing the codec's head output from (B, 1, S, S) images.

    `family` and `hparams` (the full model hyperparameters) are set by `create_model`, so
    ``create_model(m.family, m.codec.num_keypoints, m.codec.input_size, **m.hparams)``
    rebuilds the same architecture (e.g. to load a checkpoint).
    """

    def __init__(self, network: nn.Module, codec: KeypointCodec):
        super().__init__()
        self.network = network
        self.codec = codec
        self.family = ""
        self.hparams: dict[str, Any] = {}

    def forward(self, images: Tensor) -> Tensor:
        """images float (B, 1, S, S) in [0, 1] -> raw head output (B, *codec.output_shape)."""
        size = self.codec.input_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (1, size, size):
            raise KitError(
                f"{self.family or 'model'} expects images of shape (B, 1, {size}, {size}), "
                f"got {tuple(images.shape)}"
            )
        return self.network(images)

    def predict_keypoints(self, images: Tensor) -> Tensor:
        """(B, K, 2) keypoints in input pixels."""
        return self.codec.decode(self(images))


@dataclass(frozen=True)
class ModelFamily:
    name: str
    head: str
    model_defaults: dict[str, Any]
    train_defaults: dict[str, Any]
    search_space: Callable[[optuna.Trial], dict[str, Any]]
    builder: Callable[..., KeypointModel] = field(repr=False)
    cpu_speed: dict[str, bool] = field(default_factory=dict)  # measured CPU winners

    def split(self, params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split flat hyperparameters into (model, train) by which defaults declare each key."""
        unknown = sorted(set(params) - set(self.model_defaults) - set(self.train_defaults))
        if unknown:
            raise KitError(
                f"unknown hyperparameter {', '.join(unknown)} for model {self.name!r}",
                hint=f"model: {', '.join(self.model_defaults)}; "
                f"train: {', '.join(self.train_defaults)}",
            )
        model = {k: v for k, v in params.items() if k in self.model_defaults}
        train = {k: v for k, v in params.items() if k in self.train_defaults}
        return model, train


_REGISTRY: dict[str, ModelFamily] = {}

# Training recipes that families start from (train_recipe changes a few keys).
# The seeds' notebooks: Adam at a constant rate, no augmentation but flips; they early-stopped
# on the validation rows. kit keeps the last epoch instead (keep=last, patience 0), so that no
# choice is made on the rows a fold is scored on. A cosine schedule scored worse here (lenet, 20
# epochs: public 2.485 against 2.391; docs/benchmarks.md, "Honest folds").
SEED_RECIPE: dict[str, Any] = {
    "optimizer": "adam",
    "lr": 1e-3,
    "momentum": 0.9,
    "weight_decay": 0.0,
    "batch_size": 64,
    "epochs": 100,
    "schedule": "none",
    "warmup_epochs": 0,
    "patience": 0,
    "flip": 0.5,
    "rotate_deg": 0.0,
    "shift": 0.0,
    "scale": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "noise": 0.0,
}
# Today's defaults for deeper nets: AdamW, one-cycle over a fixed length, light augmentation.
MODERN_RECIPE: dict[str, Any] = {
    **SEED_RECIPE,
    "optimizer": "adamw",
    "batch_size": 32,
    "epochs": 60,
    "schedule": "onecycle",
    "warmup_epochs": 1,
    "patience": 0,
    "rotate_deg": 8.0,
    "shift": 0.03,
    "scale": 0.05,
    "brightness": 0.2,
    "contrast": 0.2,
}


def seed_augment_space(trial: optuna.Trial) -> dict[str, float]:
    """The augmentation the seed families (sp, lenet, convbn) search: their flip and rotation."""
    return {
        "flip": trial.suggest_categorical("flip", [0.0, 0.5]),
        "rotate_deg": trial.suggest_float("rotate_deg", 0.0, 15.0),
    }


def augment_space(trial: optuna.Trial) -> dict[str, float]:
    """The geometric and photometric augmentation strengths every deep family searches."""
    return {
        "rotate_deg": trial.suggest_float("rotate_deg", 0.0, 20.0),
        "shift": trial.suggest_float("shift", 0.0, 0.1),
        "scale": trial.suggest_float("scale", 0.0, 0.15),
        "brightness": trial.suggest_float("brightness", 0.0, 0.5),
        "contrast": trial.suggest_float("contrast", 0.0, 0.5),
    }


def train_recipe(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """`base` with `changes`; a key the recipe does not know is a typo, so it is refused."""
    unknown = sorted(set(changes) - set(base))
    if unknown:
        raise KitError(f"unknown train setting(s) {', '.join(unknown)}", hint=f"use {sorted(base)}")
    return {**base, **changes}


def register_model(
    name: str,
    *,
    head: str = "regression",
    model_defaults: dict[str, Any],
    train_defaults: dict[str, Any],
    search_space: Callable[[optuna.Trial], dict[str, Any]],
    cpu_speed: dict[str, bool] | None = None,
) -> Callable[[Callable[..., KeypointModel]], Callable[..., KeypointModel]]:
    """Decorator registering a builder ``(num_keypoints, input_size, **model_hparams)``.

    `cpu_speed` names the speed settings that `benchmarks/train_throughput.py` measured faster for
    this family on a CPU (e.g. ``{"channels_last": True}``); "auto" settings use them there.
    """
    cpu_speed = dict(cpu_speed or {})

    def decorator(builder: Callable[..., KeypointModel]) -> Callable[..., KeypointModel]:
        if name in _REGISTRY:
            raise KitError(f"model {name!r} is already registered", hint="pick another name")
        if head not in HEADS:
            raise KitError(f"model {name!r} has unknown head {head!r}", hint=f"use {HEADS}")
        params = set(inspect.signature(builder).parameters) - set(SIZE_ARGS)
        if params != set(model_defaults):
            raise KitError(
                f"model {name!r}: builder hyperparameters {sorted(params)} differ from "
                f"model_defaults {sorted(model_defaults)}"
            )
        shared = sorted(set(model_defaults) & set(train_defaults))
        if shared:
            raise KitError(f"model {name!r}: {shared} are both model and train hyperparameters")
        if set(cpu_speed) - set(CPU_SPEED_KEYS) or not all(
            isinstance(v, bool) for v in cpu_speed.values()
        ):
            raise KitError(
                f"model {name!r}: cpu_speed {cpu_speed!r} must map "
                f"{', '.join(CPU_SPEED_KEYS)} to true or false"
            )
        defaults = {**model_defaults, **SHARED_MODEL_DEFAULTS}
        _REGISTRY[name] = ModelFamily(
            name, head, defaults, dict(train_defaults), search_space, builder, cpu_speed
        )
        return builder

    return decorator


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_family(name: str) -> ModelFamily:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KitError(
            f"unknown model {name!r}", hint=f"available: {', '.join(list_models()) or 'none'}"
        ) from None


def create_model(
    name: str, num_keypoints: int, input_size: int, **model_hparams: Any
) -> KeypointModel:
    """Build family `name` for K keypoints on S x S inputs; hparams override its model_defaults."""
    family = get_family(name)
    unknown = sorted(set(model_hparams) - set(family.model_defaults))
    if unknown:
        raise KitError(
            f"unknown model hyperparameter {', '.join(unknown)} for {name!r}",
            hint=f"known: {', '.join(family.model_defaults)}",
        )
    hparams = {**family.model_defaults, **model_hparams}
    own = {k: v for k, v in hparams.items() if k not in SHARED_MODEL_DEFAULTS}
    size = scaled_size(input_size, hparams["input_scale"])
    model = family.builder(num_keypoints=num_keypoints, input_size=size, **own)
    if size != input_size:  # upsample first; keypoints stay in the competition's pixels
        network = nn.Sequential(Upsample(size), model.network)
        model = KeypointModel(network, ScaledCodec(model.codec, input_size))
    model.family = name
    model.hparams = hparams
    return model
