"""Worker processes: one `python -m kit tune ... --best 0` per GPU (CUDA_VISIBLE_DEVICES) or
per CPU share, all on one storage; the parent reports the studies' progress and waits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from kit.competition import Competition
from kit.errors import KitError
from kit.progress import OnEvent
from kit.tuning.studies import best_value, count_trials, study_name
from kit.tuning.trials import TuneEvent


def worker_environments(gpus: Sequence[str] | None, workers: int | None) -> list[dict[str, str]]:
    """Per worker: the environment changes (CUDA_VISIBLE_DEVICES for one GPU each).

    GPU indices are the ones this process sees (cuda:N), mapped through its own
    CUDA_VISIBLE_DEVICES when that is set."""
    if gpus and workers:
        raise KitError("--gpus and --workers both given", hint="--gpus starts one worker per GPU")
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        mapping = [v.strip() for v in visible.split(",")] if visible else None
        envs = []
        for gpu in gpus:
            if not gpu.isdigit() or (mapping is not None and int(gpu) >= len(mapping)):
                raise KitError(
                    f"--gpus: {gpu!r} is not a GPU index", hint="e.g. --gpus 0,1 (see nvidia-smi)"
                )
            envs.append({"CUDA_VISIBLE_DEVICES": mapping[int(gpu)] if mapping else gpu})
        return envs
    if workers is not None and workers < 1:
        raise KitError(f"--workers {workers}: need at least 1")
    return [{} for _ in range(workers or 0)]


def _cpu_shares(n: int) -> list[set[int]]:
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS: no pinning
        return [set() for _ in range(n)]
    return [set(cpus[i::n]) or set(cpus) for i in range(n)]


def worker_command(comp: Competition, families: list[str], options: dict[str, Any]) -> list[str]:
    """`python -m kit tune ...` for one search-only worker (it trains no best trials)."""
    args = [sys.executable, "-m", "kit", "tune", comp.name, "--families", ",".join(families)]
    for flag, value in options.items():
        if value is not None:
            args += [flag, str(value)]
    return [*args, "--best", "0"]


def run_workers(
    comp: Competition,
    families: list[str],
    storage: RDBStorage,
    envs: list[dict[str, str]],
    options: dict[str, Any],
    *,
    target: int | None,
    on_event: OnEvent,
) -> None:
    """Start one search worker per environment, report the studies' progress, wait for all."""
    logs = comp.workspace.root / "tune-logs"
    logs.mkdir(parents=True, exist_ok=True)
    env_base = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[1])  # works without `pip install`
    env_base["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, env_base.get("PYTHONPATH")) if p
    )
    command = worker_command(comp, families, options)
    procs: list[tuple[subprocess.Popen, Path]] = []
    shares = _cpu_shares(len(envs)) if not any(envs) else [set()] * len(envs)
    try:
        for index, (extra, cpus) in enumerate(zip(envs, shares, strict=True)):
            log = logs / f"worker-{index}.log"
            with open(log, "w") as out:
                proc = subprocess.Popen(
                    command, env={**env_base, **extra}, stdout=out, stderr=subprocess.STDOUT
                )
            if cpus:
                os.sched_setaffinity(proc.pid, cpus)
            procs.append((proc, log))
        while any(p.poll() is None for p, _ in procs):
            _report_counts(comp, families, storage, target, on_event)
            time.sleep(1.0)
        _report_counts(comp, families, storage, target, on_event)
    except BaseException as exc:
        # A Ctrl-C in the terminal reached the workers too; otherwise interrupt them now.
        # On SIGINT a worker marks its running trial FAIL and exits.
        _stop_workers([p for p, _ in procs], already=isinstance(exc, KeyboardInterrupt))
        raise
    for index, (proc, log) in enumerate(procs):
        if proc.returncode != 0:
            lines = log.read_text(errors="replace").strip().splitlines()
            last = lines[-1] if lines else "no output"
            raise KitError(f"worker {index} exited with code {proc.returncode}: {last}", path=log)


def _stop_workers(procs: list[subprocess.Popen], already: bool, grace: float = 10.0) -> None:
    if not already:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # a second one if the first never reached it
            proc.wait()


def _report_counts(comp, families, storage, target, on_event) -> None:
    for family in families:
        try:
            study = optuna.load_study(study_name=study_name(comp, family), storage=storage)
        except KeyError:  # not created yet by the workers
            continue
        running = count_trials(study, (TrialState.RUNNING,))
        on_event(
            TuneEvent(
                "search",
                family,
                done=count_trials(study),
                target=target,
                best=best_value(study),
                text=f"{running} running",
            ).event()
        )
