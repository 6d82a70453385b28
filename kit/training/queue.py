"""One fold queue over an executor: `train_run`, `kit run` and tuning all dispatch folds here.

The queue pulls runs lazily from a source (a generator), so the caller decides what starts next
when a worker frees up, knowing the seconds still owed to runs in flight (`owed_seconds`) and
how fast folds really trained against their estimates (`pace`). A
worker that frees up takes the next fold of a started run, else the next run is pulled. An
executor is in-process (`InProcessExecutor`: folds train one after another, errors raise where
they happen) or a pool of processes (kit.training.parallel.FoldPool), as AutoGluon's fold-fitting
strategies share one interface.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from kit.store.runs import FoldRecord, RunResult

__all__ = [
    "Finished",
    "FoldExecutor",
    "FoldQueue",
    "InProcessExecutor",
    "QueuedRun",
    "TrainableRun",
]


@runtime_checkable
class TrainableRun(Protocol):
    """A run opened for training (kit.training.runs.OpenRun)."""

    run_id: str

    @property
    def todo(self) -> list[int]: ...

    def announce(self) -> None:
        """Say which folds were found done (once, before its first fold)."""

    def train_here(self, fold: int) -> FoldRecord:
        """Train one fold in this process."""

    def in_worker(self, fold: int) -> tuple[Callable[..., Any], tuple]:
        """A module-level function and its arguments that train `fold` in a worker process:
        ``fn(comp, *args, on_event=...)``."""

    def finish(self, trained: list[int]) -> RunResult:
        """Assemble every done fold into the run's arrays and manifest."""


class FoldExecutor(Protocol):
    """Where folds train: `workers` at once."""

    workers: int

    def submit(self, run: TrainableRun, fold: int) -> Future: ...

    def wait_any(self, futures: Iterable[Future]) -> set[Future]: ...


class InProcessExecutor:
    """One fold at a time, in this process: `submit` trains it before returning, and its error
    (a KitError, Optuna's TrialPruned, Ctrl-C) raises right there."""

    workers = 1

    def submit(self, run: TrainableRun, fold: int) -> Future:
        future: Future = Future()
        future.set_result(run.train_here(fold))
        return future

    def wait_any(self, futures: Iterable[Future]) -> set[Future]:
        return {f for f in futures if f.done()}


@dataclass
class QueuedRun:
    """What a source yields: a run to train (or found finished), the caller's `label` for it,
    its estimated seconds per fold (for `owed_seconds`), and when the caller began opening it."""

    label: Any
    run: TrainableRun | RunResult
    fold_seconds: float = 0.0
    started: float | None = None


@dataclass(frozen=True)
class Finished:
    """A run the queue finished (or was handed finished), with its wall seconds."""

    label: Any
    result: RunResult
    seconds: float


@dataclass
class _Active:
    item: QueuedRun
    run: TrainableRun
    started: float
    queued: list[int]
    running: dict[Future, int] = field(default_factory=dict)
    trained: list[int] = field(default_factory=list)


MIN_PACE_FOLDS = 2  # folds finished before `pace` trusts them


class FoldQueue:
    """Folds of every run from a source, `executor.workers` at a time."""

    def __init__(self, executor: FoldExecutor, *, clock: Callable[[], float] = time.monotonic):
        self.executor = executor
        self.clock = clock
        self._active: list[_Active] = []
        self._submitted: dict[Future, float] = {}  # when each running fold started
        self._timed = [0, 0.0, 0.0]  # folds finished, their wall seconds, their estimates

    def pace(self) -> float:
        """Wall seconds the finished folds took per second of their estimate (a fold's share
        of its run's estimate, times the workers that share the time); 1.0 until
        MIN_PACE_FOLDS have finished."""
        folds, actual, estimated = self._timed
        return actual / estimated if folds >= MIN_PACE_FOLDS and estimated > 0 else 1.0

    def owed_seconds(self) -> float:
        """The estimated seconds still owed to started runs (their unfinished folds' share of
        the estimate; a running fold counts whole)."""
        return sum(a.item.fold_seconds * (len(a.queued) + len(a.running)) for a in self._active)

    def train(self, source: Iterable[QueuedRun]) -> Iterator[Finished]:
        """Train every run the source yields; each as it finishes. A fold's error stops the
        queue: no new fold starts, the running ones finish (their files are kept), and the
        error raises here."""
        runs = iter(source)
        exhausted = False
        while True:
            while self._running() < self.executor.workers:
                active = next((a for a in self._active if a.queued), None)
                if active is None:
                    if exhausted:
                        break
                    item = next(runs, None)
                    if item is None:
                        exhausted = True
                        break
                    finished = self._start(item)
                    if finished is not None:
                        yield finished
                    continue
                fold = active.queued.pop(0)
                started = self.clock()
                future = self.executor.submit(active.run, fold)
                active.running[future] = fold
                self._submitted[future] = started
            if not self._active:
                return
            done = self.executor.wait_any([f for a in self._active for f in a.running])
            yield from self._collect(done)

    def train_one(self, run: TrainableRun | RunResult) -> RunResult:
        """Train one run's folds; its result."""
        (finished,) = list(self.train([QueuedRun(None, run)]))
        return finished.result

    def _running(self) -> int:
        return sum(len(a.running) for a in self._active)

    def _start(self, item: QueuedRun) -> Finished | None:
        started = self.clock() if item.started is None else item.started
        if not isinstance(item.run, TrainableRun):  # found finished
            return Finished(item.label, item.run, self.clock() - started)
        item.run.announce()
        todo = list(item.run.todo)
        active = _Active(item, item.run, started, todo)
        self._active.append(active)
        if not todo:  # every fold was done: only the assembling is left
            return self._finish(active)
        return None

    def _collect(self, done: set[Future]) -> Iterator[Finished]:
        failed: BaseException | None = None
        for active in list(self._active):
            for future in [f for f in active.running if f in done]:
                fold = active.running.pop(future)
                started = self._submitted.pop(future, None)
                try:
                    future.result()
                except BaseException as error:  # re-raised once the running folds are done
                    failed = failed or error
                    continue
                active.trained.append(fold)
                if started is not None and active.item.fold_seconds > 0:
                    self._time_fold(self.clock() - started, active.item.fold_seconds)
            if failed is None and not active.queued and not active.running:
                yield self._finish(active)
        if failed is not None:
            self._drain()
            raise failed

    def _time_fold(self, seconds: float, fold_seconds: float) -> None:
        self._timed[0] += 1
        self._timed[1] += seconds
        self._timed[2] += fold_seconds * self.executor.workers

    def _drain(self) -> None:
        """After an error: start nothing new, wait for the running folds (their work is kept)."""
        for active in self._active:
            active.queued.clear()
        running = [f for a in self._active for f in a.running]
        while running:
            running = [f for f in running if f not in self.executor.wait_any(running)]
        self._active.clear()

    def _finish(self, active: _Active) -> Finished:
        self._active.remove(active)
        result = active.run.finish(sorted(active.trained))
        return Finished(active.item.label, result, self.clock() - active.started)
