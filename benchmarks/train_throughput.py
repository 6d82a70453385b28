"""Training throughput: kit's on-device loop against a plain PyTorch DataLoader loop.

Both sides train the same model (same family, same initial weights, same optimizer, batch size,
codec loss) on the same synthetic 96 px faces with the same augmentation (horizontal flip with
the keypoint swap + rotation up to 10 degrees):

- kit: the whole dataset is one uint8 tensor on the device; batches are sliced from it and
  augmented as a batch (kit.training.loop.Trainer.epoch, kit.training.augment.augment_batch).
- plain: the seeds' way. A torch Dataset flips and rotates each sample with numpy/PIL, a
  DataLoader (shuffle, default collate, num_workers=0) batches them, and every batch is copied
  to the device.

Reports training images/s for each side and their ratio, per family and device (CPU always,
CUDA when available). Each side runs `--rounds` times, interleaved in alternating order, and
the best round counts (the cores may be shared). Run from the repo root:

    python benchmarks/train_throughput.py [--families sp,lenet] [--images 384] [--rounds 2]
        [--variants auto,baseline,channels_last,bf16,compile,threads1,threads2] [--no-plain]

`--variants` times kit's loop in several ways on the same model: "baseline" has every speed
setting (kit.training.speed) off, each other turns one on or pins torch's CPU threads, and
"auto" is kit's default on the device. Every row gives each variant's images/s, its ratio to
the plain loop, and the first step's seconds (for "compile", the compilation; "compile again"
is a second fresh model of the same family, as every fold and trial builds one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kit.competition import load_competition
from kit.data.synthetic import fkd15_from_68, make_faces
from kit.models import list_models
from kit.training.augment import augment_batch
from kit.training.config import resolve_config
from kit.training.device import DeviceData, configure_cpu_threads
from kit.training.loop import Trainer

AUGMENT = {"flip": 0.5, "rotate_deg": 10.0, "shift": 0.0, "scale": 0.0}
AUGMENT |= {"brightness": 0.0, "contrast": 0.0, "noise": 0.0}
OUT = Path(__file__).resolve().parent / "out"


class SeedStyleFaces(Dataset):
    """Per-sample numpy/PIL augmentation, the way the seed notebooks trained."""

    def __init__(self, images: np.ndarray, keypoints: np.ndarray, flip_perm: list[int], seed=0):
        self.images, self.keypoints, self.flip_perm = images, keypoints, flip_perm
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, points = self.images[i], self.keypoints[i].copy()
        size = image.shape[-1]
        centre = (size - 1) / 2
        if self.rng.random() < AUGMENT["flip"]:
            image = image[:, ::-1]
            points[:, 0] = size - 1 - points[:, 0]
            points = points[self.flip_perm]
        angle = self.rng.uniform(-AUGMENT["rotate_deg"], AUGMENT["rotate_deg"])
        rotated = Image.fromarray(np.ascontiguousarray(image)).rotate(
            angle, resample=Image.BILINEAR
        )  # counter-clockwise on screen about the image centre
        theta = np.deg2rad(angle)
        dx, dy = points[:, 0] - centre, points[:, 1] - centre
        points = np.stack(
            [
                centre + np.cos(theta) * dx + np.sin(theta) * dy,
                centre - np.sin(theta) * dx + np.cos(theta) * dy,
            ],
            axis=1,
        )
        pixels = np.asarray(rotated, np.float32)[None] / 255.0
        return torch.from_numpy(pixels), torch.from_numpy(points.astype(np.float32))


def plain_epoch(trainer: Trainer, loader: DataLoader) -> int:
    """The seeds' loop over the same model/optimizer; returns images trained."""
    model, device, seen = trainer.model, trainer.device, 0
    model.train()
    for images, points in loader:
        images, points = images.to(device), points.to(device)
        targets, mask = model.codec.encode(points)
        loss = model.codec.loss(model(images), targets, mask)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        seen += len(images)
    float(loss.detach())  # wait for the device
    return seen


@dataclass(frozen=True)
class Variant:
    """One way to run kit's loop: speed settings (kit.training.speed) and CPU threads."""

    name: str
    speed: dict = field(default_factory=dict)  # channels_last / precision / compile overrides
    threads: int | None = None  # torch CPU threads while this variant runs (None: as set)


# "baseline" turns every speed setting off, each other variant turns one on (or pins torch's CPU
# threads); "auto" is kit's default on the device (CUDA: channels_last + bf16; CPU: the family's
# measured `cpu_speed`).
BASELINE = {"channels_last": False, "precision": "fp32", "compile": False}
VARIANTS = {
    "auto": Variant("auto"),
    "baseline": Variant("baseline", BASELINE),
    "channels_last": Variant("channels_last", {**BASELINE, "channels_last": True}),
    "bf16": Variant("bf16", {**BASELINE, "precision": "bf16"}),
    "compile": Variant("compile", {**BASELINE, "compile": True}),
    "threads1": Variant("threads1", BASELINE, threads=1),
    "threads2": Variant("threads2", BASELINE, threads=2),
}
SPEED_VARIANTS = ("auto", "baseline", "channels_last", "bf16", "compile")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure(
    family: str,
    device: torch.device,
    images: np.ndarray,
    keypoints: np.ndarray,
    rounds: int,
    variants: list[Variant] | None = None,
    plain: bool = True,
) -> dict:
    """Training images/s of kit's loop in each variant (and of the plain loop), same model.

    Every side starts from the same weights. Its first step (allocation, kernel choice and,
    for torch.compile, the compilation) is timed apart as `first_step_s`; then each side runs
    `rounds` epochs, interleaved in rotating order so a load spike hits all; the best counts."""
    comp = load_competition("facial-keypoints")
    variants = variants or [VARIANTS["auto"]]
    columns = tuple(range(comp.num_keypoints))
    n = len(images)
    data = DeviceData.from_arrays(images, keypoints, device)
    rows = torch.arange(n, device=device)
    sides: dict[str, Callable[[], float]] = {}
    first_step: dict[str, float] = {}
    batch_size = 0
    for variant in variants:
        config = resolve_config(family, {**AUGMENT, **variant.speed})
        trainer = Trainer.create(comp, config, columns, n, device, seed=0)
        batch_size = trainer.batch_size
        per_epoch = (n // batch_size) * batch_size
        warm_images, warm_points = data.images[:batch_size], data.keypoints[:batch_size]
        with torch_threads(variant.threads):
            first_step[variant.name] = _timed(
                device, partial(trainer.step, warm_images, warm_points)
            )
            if trainer.speed.compile:  # each fold and trial builds a new model: compiled again
                again = Trainer.create(comp, config, columns, n, device, seed=0)
                first_step[f"{variant.name} again"] = _timed(
                    device, partial(again.step, warm_images, warm_points)
                )

        def kit_epoch(t=trainer, per_epoch=per_epoch, threads=variant.threads) -> float:
            with torch_threads(threads):
                return per_epoch / _timed(device, lambda: t.epoch(data, rows))

        sides[variant.name] = kit_epoch
    if plain:
        trainer = Trainer.create(comp, resolve_config(family, AUGMENT), columns, n, device, 0)
        dataset = SeedStyleFaces(images, keypoints, comp.flip_permutation())
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
        warm_loader = DataLoader(Subset(dataset, range(batch_size)), batch_size=batch_size)
        first_step["plain"] = _timed(device, lambda: plain_epoch(trainer, warm_loader))

        def plain_rate(t=trainer) -> float:
            seen = 0

            def run() -> None:
                nonlocal seen
                seen = plain_epoch(t, loader)

            seconds = _timed(device, run)
            return seen / seconds

        sides["plain"] = plain_rate
    rates: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for round_ in range(rounds):  # rotate the order, so a load spike hits every side
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            rates[name].append(sides[name]())
    best = {name: max(r) for name, r in rates.items()}
    row = {
        "family": family,
        "device": str(device),
        "batch_size": batch_size,
        "img_s": {name: round(rate, 1) for name, rate in best.items()},
        "first_step_s": {name: round(s, 3) for name, s in first_step.items()},
        "rounds": {name: [round(r, 1) for r in rs] for name, rs in rates.items()},
    }
    if plain:
        row["vs_plain"] = {
            name: round(rate / best["plain"], 2) for name, rate in best.items() if name != "plain"
        }
    return row


def _timed(device: torch.device, fn: Callable[[], object]) -> float:
    """Seconds that `fn` takes, the device's queued work included."""
    _sync(device)
    started = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - started


def measure_pipeline(device: torch.device, images, keypoints, batch_size: int = 64) -> dict:
    """The input pipelines alone (no model): batches/s that each side can feed."""
    comp = load_competition("facial-keypoints")
    config = resolve_config("lenet", AUGMENT)
    trainer = Trainer.create(comp, config, tuple(range(15)), len(images), device, seed=0)
    data = DeviceData.from_arrays(images, keypoints, device)
    order = torch.randperm(len(images), device=device)
    steps = len(images) // batch_size
    rates: dict[str, list[float]] = {"kit": [], "plain": []}
    for _ in range(3):
        _sync(device)
        t0 = time.perf_counter()
        for step in range(steps):
            idx = order[step * batch_size : (step + 1) * batch_size]
            batch = data.images[idx].float().div_(255.0)
            augment_batch(batch, data.keypoints[idx], trainer.flip_perm, trainer.augment)
        _sync(device)
        rates["kit"].append(steps * batch_size / (time.perf_counter() - t0))
        loader = DataLoader(
            SeedStyleFaces(images, keypoints, comp.flip_permutation()),
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
        )
        t0 = time.perf_counter()
        for batch, points in loader:
            batch, points = batch.to(device), points.to(device)
        _sync(device)
        rates["plain"].append(steps * batch_size / (time.perf_counter() - t0))
    kit, plain = max(rates["kit"]), max(rates["plain"])
    return {
        "family": "(pipeline only)",
        "device": str(device),
        "batch_size": batch_size,
        "kit_img_s": round(kit, 1),
        "plain_img_s": round(plain, 1),
        "ratio": round(kit / plain, 2),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def markdown_table(rows: list[dict]) -> str:
    """One line per family and device: img/s of each side, and kit's ratio to the plain loop
    where the plain loop ran."""
    names = list(dict.fromkeys(name for row in rows for name in row["img_s"]))
    ratios = [n for n in names if n != "plain"] if "plain" in names else []
    lines = [
        "| family | device | batch | " + " | ".join(f"{n} img/s" for n in names) + " | "
        + "".join(f"{n} / plain | " for n in ratios) + "first step s |",
        "| --- | --- | ---: | " + " | ".join("---:" for _ in names) + " | "
        + "".join("---: | " for _ in ratios) + "--- |",
    ]  # fmt: skip
    for row in rows:
        rates = [f"{row['img_s'].get(n, float('nan')):.1f}" for n in names]
        vs = [f"{row.get('vs_plain', {}).get(n, float('nan')):.2f}x" for n in ratios]
        first = ", ".join(f"{n} {v:.2f}" for n, v in row["first_step_s"].items())
        lines.append(
            f"| {row['family']} | {row['device']} | {row['batch_size']} | "
            + " | ".join(rates) + " | " + "".join(f"{v} | " for v in vs) + f"{first} |"
        )  # fmt: skip
    return "\n".join(lines)


def parse_variants(text: str) -> list[Variant]:
    unknown = [v for v in text.split(",") if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"--variants: unknown {unknown}; valid: {', '.join(VARIANTS)}")
    return [VARIANTS[v] for v in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(list_models()))
    parser.add_argument("--images", type=int, default=384, help="synthetic faces per epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices", default="auto", help="auto = cpu (+ cuda if available)")
    parser.add_argument(
        "--variants",
        default="auto",
        help=f"kit loop variants, comma list of {', '.join(VARIANTS)} "
        f"(speed: {','.join(SPEED_VARIANTS)})",
    )
    parser.add_argument("--no-plain", action="store_true", help="skip the plain DataLoader loop")
    parser.add_argument("--out", type=Path, default=OUT / "train_throughput.json")
    args = parser.parse_args()
    variants = parse_variants(args.variants)
    threads = configure_cpu_threads()
    faces, landmarks = make_faces(args.images, 96, seed=0)
    keypoints = fkd15_from_68(landmarks)
    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = args.devices.split(",")
    pipelines, results = [], []
    for device in devices:
        if not args.no_plain:
            row = measure_pipeline(torch.device(device), faces, keypoints)
            pipelines.append(row)
            print(
                f"input pipeline only, {device}: kit {row['kit_img_s']:.0f} img/s, "
                f"plain {row['plain_img_s']:.0f} img/s ({row['ratio']:.1f}x)",
                flush=True,
            )
        for family in args.families.split(","):
            row = measure(
                family, torch.device(device), faces, keypoints, args.rounds, variants,
                plain=not args.no_plain,
            )  # fmt: skip
            results.append(row)
            print(markdown_table([row]).splitlines()[-1], flush=True)
    print(markdown_table(results))
    meta = {
        "threads": threads,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "images_per_epoch": args.images,
        "rounds": args.rounds,
        "variants": {v.name: {"speed": v.speed, "threads": v.threads} for v in variants},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"meta": meta, "pipelines": pipelines, "results": results}, indent=2)
    )
    print(f"load average after: {os.getloadavg()}; written {args.out}")


if __name__ == "__main__":
    main()
