"""Several folds at once in worker processes, each with its share of the CPU's threads.

Why: on this project's 2-core VM two folds of a short run, worker start-up included, trained
1.53x as fast as in one process on both cores (resnet 1.16x, lenet 1.05x): small convolutions
split badly over threads, and separate folds share nothing (benchmarks/fold_workers.py,
docs/benchmarks.md "Fold workers").

Workers are spawned (never forked: torch's thread pools do not survive a fork), get the
competition pickled, load the arrays from the work folder, and write each fold's files
exactly as a sequential run does: a submitted run names the module-level function that reopens
it from its `RunSpec` in the worker (`TrainableRun.in_worker`), so this module knows no trainer.
The parent assembles the run (kit.training.queue). Progress events come back through a queue.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any

import torch

from kit.competition import Competition
from kit.progress import Event, OnEvent, ignore
from kit.training.device import THREADS_ENV, available_cpus
from kit.training.queue import TrainableRun

POLL_SECONDS = 0.2


def default_workers(device_type: str) -> int:
    """Folds trained at once: one per CPU core on a CPU (at most 4), one on a GPU."""
    return 1 if device_type != "cpu" else max(1, min(4, available_cpus()))


# ---------------------------------------------------------------- inside a worker

_WORKER: dict[str, Any] = {}


def _init_worker(comp: Competition, threads: int, events: Any) -> None:
    os.environ[THREADS_ENV] = str(threads)
    torch.set_num_threads(threads)
    _WORKER["comp"] = comp
    _WORKER["events"] = events


def _send(event: Event) -> None:
    _WORKER["events"].put(event)


def _call_with_events(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(_WORKER["comp"], *args, on_event=_send)


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    return fn(_WORKER["comp"], *args)


# ---------------------------------------------------------------- the parent


class FoldPool:
    """A pool of `workers` spawned processes with `threads` torch threads each.

    Use as a context manager; `submit` one fold, `wait_any` for the next to finish (forwarding
    the workers' events to `on_event` meanwhile). It is a `FoldExecutor` of kit.training.queue."""

    def __init__(
        self,
        comp: Competition,
        workers: int,
        *,
        threads: int | None = None,
        on_event: OnEvent = ignore,
    ):
        self.comp = comp
        self.workers = max(1, workers)
        self.threads = threads or max(1, available_cpus() // self.workers)
        self.on_event = on_event
        self._executor: ProcessPoolExecutor | None = None
        self._events: Any = None

    def __enter__(self) -> FoldPool:
        context = multiprocessing.get_context("spawn")
        self._events = context.Queue()
        self._executor = ProcessPoolExecutor(
            self.workers,
            mp_context=context,
            initializer=_init_worker,
            initargs=(self.comp, self.threads, self._events),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._executor is not None
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.drain()

    def submit(self, run: TrainableRun, fold: int) -> Future:
        """Train `fold` of `run` in a worker (the queue's `FoldExecutor`)."""
        assert self._executor is not None, "use FoldPool as a context manager"
        fn, args = run.in_worker(fold)
        return self._executor.submit(_call_with_events, fn, *args)

    def call(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Run ``fn(comp, *args)`` in a worker (a module-level function: it is pickled)."""
        assert self._executor is not None, "use FoldPool as a context manager"
        return self._executor.submit(_call, fn, *args)

    def drain(self) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except (queue.Empty, OSError, ValueError):
                return
            self.on_event(event)

    def wait_any(self, futures: Iterable[Future]) -> set[Future]:
        """Block until one of `futures` is done; the done ones."""
        pending = set(futures)
        while True:
            done, _ = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            self.drain()
            if done:
                return done

    def wait_all(self, futures: Iterable[Future]) -> None:
        """Block until every one of `futures` is done (forwarding events meanwhile)."""
        pending = set(futures)
        while pending:
            pending -= self.wait_any(pending)
