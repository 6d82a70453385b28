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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kit.competition import load_competition
from kit.data.synthetic import fkd15_from_68, make_faces
from kit.models import list_models
from kit.training.augment import augment_batch
from kit.training.loop import (
    DeviceData,
    Trainer,
    configure_cpu_threads,
    resolve_config,
)

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


def measure(family: str, device: torch.device, images, keypoints, rounds: int) -> dict:
    comp = load_competition("facial-keypoints")
    config = resolve_config(family, AUGMENT)
    columns = tuple(range(comp.num_keypoints))
    n = len(images)
    kit_trainer = Trainer.create(comp, config, columns, n, device, seed=0)
    plain_trainer = Trainer.create(comp, config, columns, n, device, seed=0)
    data = DeviceData.from_arrays(images, keypoints, device)
    rows = torch.arange(n, device=device)
    dataset = SeedStyleFaces(images, keypoints, comp.flip_permutation())
    loader = DataLoader(dataset, batch_size=kit_trainer.batch_size, shuffle=True, drop_last=True)
    per_epoch = (n // kit_trainer.batch_size) * kit_trainer.batch_size
    warm = slice(0, kit_trainer.batch_size)  # first step of each (allocations, kernels)
    kit_trainer.step(data.images[warm], data.keypoints[warm])
    plain_epoch(
        plain_trainer,
        DataLoader(
            torch.utils.data.Subset(dataset, range(warm.stop)), batch_size=kit_trainer.batch_size
        ),
    )
    kit_rates, plain_rates = [], []

    def time_kit() -> None:
        t0 = time.perf_counter()
        kit_trainer.epoch(data, rows)
        _sync(device)
        kit_rates.append(per_epoch / (time.perf_counter() - t0))

    def time_plain() -> None:
        t0 = time.perf_counter()
        seen = plain_epoch(plain_trainer, loader)
        _sync(device)
        plain_rates.append(seen / (time.perf_counter() - t0))

    for round_ in range(rounds):  # alternate the order, so a load spike hits both sides
        for timed in (time_kit, time_plain) if round_ % 2 == 0 else (time_plain, time_kit):
            _sync(device)
            timed()
    kit_best, plain_best = max(kit_rates), max(plain_rates)
    return {
        "family": family,
        "device": str(device),
        "batch_size": kit_trainer.batch_size,
        "kit_img_s": round(kit_best, 1),
        "plain_img_s": round(plain_best, 1),
        "ratio": round(kit_best / plain_best, 2),
        "kit_rounds": [round(r, 1) for r in kit_rates],
        "plain_rounds": [round(r, 1) for r in plain_rates],
    }


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(list_models()))
    parser.add_argument("--images", type=int, default=384, help="synthetic faces per epoch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--devices", default="auto", help="auto = cpu (+ cuda if available)")
    args = parser.parse_args()
    threads = configure_cpu_threads()
    faces, landmarks = make_faces(args.images, 96, seed=0)
    keypoints = fkd15_from_68(landmarks)
    if args.devices == "auto":
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = args.devices.split(",")
    results = []
    print("| family | device | batch | kit img/s | plain img/s | kit / plain |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for device in devices:
        row = measure_pipeline(torch.device(device), faces, keypoints)
        results.append(row)
        print(
            f"| {row['family']} | {device} | {row['batch_size']} | {row['kit_img_s']:.0f} | "
            f"{row['plain_img_s']:.0f} | {row['ratio']:.1f}x |",
            flush=True,
        )
        for family in args.families.split(","):
            row = measure(family, torch.device(device), faces, keypoints, args.rounds)
            results.append(row)
            print(
                f"| {family} | {device} | {row['batch_size']} | {row['kit_img_s']:.1f} | "
                f"{row['plain_img_s']:.1f} | {row['ratio']:.2f}x |",
                flush=True,
            )
    OUT.mkdir(exist_ok=True)
    meta = {
        "threads": threads,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "images_per_epoch": args.images,
        "rounds": args.rounds,
    }
    (OUT / "train_throughput.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2)
    )
    print(f"load average after: {os.getloadavg()}; written {OUT / 'train_throughput.json'}")


if __name__ == "__main__":
    main()
