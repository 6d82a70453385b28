"""Speed settings (channels_last, precision, compile): "auto" by device and family, overrides,
one-line errors, and what a run records."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import run_tiny, write_tiny_competition

from kit.errors import KitError
from kit.models import get_family, register_model
from kit.models import registry as registry_module
from kit.training.config import resolve_config, run_speed
from kit.training.loop import Trainer
from kit.training.speed import Speed

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


def test_auto_is_channels_last_and_bf16_on_cuda_and_the_familys_winners_on_a_cpu() -> None:
    auto = {"channels_last": "auto", "precision": "auto", "compile": "auto"}
    assert Speed.resolve(auto, CUDA) == Speed(channels_last=True, bf16=True, compile=False)
    assert Speed.resolve(auto, CPU) == Speed()
    assert Speed.resolve(auto, CPU, {"channels_last": True}) == Speed(channels_last=True)
    assert Speed.resolve(auto, MPS, {"channels_last": True}) == Speed()  # CPU winners only


def test_explicit_settings_win_over_auto() -> None:
    train = {"channels_last": False, "precision": "fp32", "compile": True}
    assert Speed.resolve(train, CUDA) == Speed(channels_last=False, bf16=False, compile=True)
    train = {"channels_last": True, "precision": "bf16", "compile": "auto"}
    assert Speed.resolve(train, CPU) == Speed(channels_last=True, bf16=True)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"precision": "fp16"}, "precision must be one of auto, fp32, bf16"),
        ({"channels_last": "maybe"}, "channels_last must be auto, true or false"),
        ({"compile": 2}, "compile must be auto, true or false"),
    ],
)
def test_bad_speed_settings_are_one_line_errors(setting: dict, message: str) -> None:
    with pytest.raises(KitError, match=message):
        resolve_config("sp", setting)


def test_bf16_on_mps_is_refused() -> None:
    with pytest.raises(KitError, match="bf16 runs on cuda or cpu, not mps"):
        Speed.resolve({"precision": "bf16"}, MPS)


def test_run_speed_reads_the_familys_cpu_speed(monkeypatch: pytest.MonkeyPatch) -> None:
    config = resolve_config("sp")
    assert get_family("sp").cpu_speed == {"channels_last": True}  # measured: docs/benchmarks.md
    assert run_speed(config, CPU) == Speed(channels_last=True)
    assert run_speed(config, CUDA) == Speed(channels_last=True, bf16=True)
    assert run_speed(resolve_config("sp", {"channels_last": False}), CPU) == Speed()
    monkeypatch.setitem(get_family("sp").cpu_speed, "compile", True)
    assert run_speed(config, CPU) == Speed(channels_last=True, compile=True)


def test_a_family_may_declare_only_known_cpu_speed_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    def build(num_keypoints: int, input_size: int):  # never called
        raise AssertionError

    for bad in ({"threads": True}, {"channels_last": "yes"}):
        with pytest.raises(KitError, match="cpu_speed"):
            register_model(
                "fast", model_defaults={}, train_defaults={}, search_space=dict, cpu_speed=bad
            )(build)


def test_trainer_applies_channels_last_and_compile_on_a_cpu() -> None:
    comp = write_tiny_competition()
    config = resolve_config("sp", {"channels_last": True, "compile": True, "hidden": 16})
    trainer = Trainer.create(comp, config, tuple(range(15)), 16, CPU, seed=0)
    assert trainer.speed == Speed(channels_last=True, compile=True)
    conv = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert trainer.step_model is not trainer.model  # the torch.compile wrapper (compiled lazily)


def test_each_fold_records_the_speed_it_ran_with() -> None:
    comp = write_tiny_competition()
    result = run_tiny(comp, folds=1, epochs=1, overrides={"channels_last": True})
    record = json.loads((result.path / "fold-0.done.json").read_text())
    assert record["speed"] == {"channels_last": True, "bf16": False, "compile": False}
    assert result.manifest.fold_speeds == {"0": record["speed"]}
