"""Where training runs: the torch device, CPU threads, and a data split as device tensors."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from kit.errors import KitError


def resolve_device(name: str | None = None) -> torch.device:
    """CUDA, then MPS, then CPU; or the named device (an unavailable one is an error)."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise KitError(
            f"unknown device {name!r}", hint="use auto, cpu, cuda, cuda:N or mps"
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise KitError("--device cuda: no CUDA GPU is available", hint="use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise KitError("--device mps: MPS is not available", hint="use --device cpu")
    return device


THREADS_ENV = "KIT_THREADS"


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours cgroup/affinity limits
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def configure_cpu_threads() -> int:
    """Intra-op threads for CPU work: $KIT_THREADS, else the CPUs this process may use minus
    the tasks other processes are running on them now (at least 1).

    Why not always every core: on a shared machine, OpenMP threads that outnumber the idle
    cores spin-wait on each other; on this project's busy 2-core VM a ResNet training step took
    8 s with 2 threads and 0.5 s with 1.
    """
    cpus = available_cpus()
    if os.environ.get(THREADS_ENV, "").strip():
        try:
            threads = int(os.environ[THREADS_ENV])
        except ValueError:
            raise KitError(f"${THREADS_ENV} must be a whole number") from None
    else:
        threads = round(cpus - _load_of_others())
    torch.set_num_threads(max(1, min(cpus, threads)))
    return torch.get_num_threads()


def _load_of_others(samples: int = 5) -> float:
    """Runnable tasks other than this one right now (median of a few /proc/loadavg reads);
    the 1-minute load average where /proc is absent."""
    path = Path("/proc/loadavg")
    if not path.is_file():
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    counts = []
    for _ in range(samples):
        running = int(path.read_text().split()[3].split("/")[0])
        counts.append(running - 1)  # the reader itself is running
        time.sleep(0.005)
    return float(np.median(counts))


def device_images(images: np.ndarray, device: torch.device) -> Tensor:
    """uint8 (N, S, S) -> uint8 (N, 1, S, S) on `device`: the whole split, 1 byte per pixel."""
    return torch.from_numpy(np.ascontiguousarray(images, np.uint8)).unsqueeze(1).to(device)


@dataclass
class DeviceData:
    """A split as device tensors: images uint8 (N, 1, S, S), keypoints float32 (N, K, 2), and
    optionally each keypoint's loss weight float32 (N, K) (None: every label weighs 1; a run
    with pseudo labels weighs them below the true ones, kit.training.targets.PseudoTargets)."""

    images: Tensor
    keypoints: Tensor
    weights: Tensor | None = None

    @classmethod
    def from_arrays(cls, images: np.ndarray, keypoints: np.ndarray, device: torch.device):
        keypoints = torch.from_numpy(np.ascontiguousarray(keypoints, np.float32))
        return cls(device_images(images, device), keypoints.to(device))
