"""`kit run`'s plan and train stages: measure the portfolio and the stack here, plan, train what
was planned while the deadline holds, and record the plan beside what happened
(work/COMP/plan.json).

On a CPU the folds of the planned runs go to a pool of worker processes, one per core
(kit.training.parallel): the portfolio is timed in those workers side by side, so that the
costs include their contention, and the folds of every run form one queue, so no core waits for
a run's last fold while the next run could start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import KitError
from kit.planning.calibrate import StackCost, measure, measure_stack
from kit.planning.planner import FOLD_CHOICES, Candidate, Plan, PlannedRun, plan_runs
from kit.planning.portfolio import PortfolioEntry, load_portfolio
from kit.progress import Event, OnEvent
from kit.store import RunResult
from kit.training.device import DeviceData, configure_cpu_threads, resolve_device
from kit.training.parallel import FoldPool, RunSpec
from kit.training.runs import OpenRun, finish_run, open_run, train_run
from kit.workspace import write_json


def make_plan(
    comp: Competition,
    seconds: float,
    *,
    device: str | None,
    families: list[str] | None,
    folds: int | None,
    on_event: OnEvent,
    pool: FoldPool | None = None,
    pseudo: bool = False,
) -> Plan:
    """Measure every portfolio configuration that suits the device (or `families`) and the
    stack, then plan `seconds` of training and stacking. `folds`: the existing folds file's k,
    else the planner chooses. With `pool`, configurations are timed in its workers. `pseudo`
    plans a pseudo-labelled student of the best run when it fits."""
    torch_device = resolve_device(device)
    train = KeypointData.load(comp.workspace.train_npz)
    entries = [e.for_rows(len(train)) for e in _entries(torch_device.type, families)]
    test = KeypointData.load(comp.workspace.test_npz)
    choices = (folds,) if folds else FOLD_CHOICES
    on_event(Event("plan", "measure", 0, len(entries) + 1, "timing the stack"))
    stack_cost = measure_stack(comp, train, test.images, choices)
    if pool is not None and pool.workers > 1:
        on_event(Event("plan", "measure", 1, len(entries) + 1, f"timing {len(entries)} models"))
        candidates = _measure_in_workers(pool, entries, len(test))
    else:
        if torch_device.type == "cpu":
            configure_cpu_threads()
        data = DeviceData.from_arrays(train.images, train.keypoints, torch_device)  # once
        candidates = []
        for i, entry in enumerate(entries):
            on_event(Event("plan", "measure", i + 1, len(entries) + 1, f"timing {entry.name}"))
            measured = measure(comp, entry, train, len(test), torch_device, device_data=data)
            candidates.append(measured)
    factor = student_factor(len(train), len(test), min(choices)) if pseudo else 0.0
    plan = plan_runs(
        candidates, seconds, fold_choices=choices, stack_seconds=stack_cost, student_factor=factor
    )
    on_event(
        Event("plan", "planned", text=f"{len(plan.runs)} runs on {plan.folds} folds", detail=plan)
    )
    return plan


def student_factor(train_rows: int, test_rows: int, folds: int) -> float:
    """How many times a teacher's epoch a student's takes: it also trains on every test row."""
    fold_rows = train_rows * (folds - 1) / folds
    return (fold_rows + test_rows) / fold_rows


def _entries(device_type: str, families: list[str] | None) -> list[PortfolioEntry]:
    entries = load_portfolio()
    chosen = (
        [e for e in entries if e.family in families]
        if families
        else [e for e in entries if e.runs_on(device_type)]
    )
    if not chosen:
        raise KitError(f"no portfolio configuration of {', '.join(families or [])}")
    return chosen


def _measure_all(comp: Competition, entries: list[PortfolioEntry], test_rows: int) -> list:
    """In a worker: every entry's costs, timed while the other workers time theirs."""
    import torch

    train = KeypointData.load(comp.workspace.train_npz)
    cpu = torch.device("cpu")
    data = DeviceData.from_arrays(train.images, train.keypoints, cpu)
    return [measure(comp, e, train, test_rows, cpu, device_data=data) for e in entries]


def _measure_in_workers(
    pool: FoldPool, entries: list[PortfolioEntry], test_rows: int
) -> list[Candidate]:
    """Each entry timed in every worker at once; the mean, for `pool.workers` folds at once."""
    futures = [pool.call(_measure_all, entries, test_rows) for _ in range(pool.workers)]
    pool.wait_all(futures)
    timings = [f.result() for f in futures]
    return [
        Candidate(
            entry,
            epoch_seconds=float(np.mean([t[i].epoch_seconds for t in timings])),
            fold_seconds=float(np.mean([t[i].fold_seconds for t in timings])),
            workers=pool.workers,
        )
        for i, entry in enumerate(entries)
    ]


# ---------------------------------------------------------------- training the plan


@dataclass
class _Started:
    """A planned run whose folds are queued or training."""

    planned: PlannedRun
    run: OpenRun
    started: float
    queued: list[int]
    running: dict[Future, int] = field(default_factory=dict)
    trained: list[int] = field(default_factory=list)


def train_plan(
    comp: Competition,
    plan: Plan,
    deadline: float,
    *,
    device: str | None,
    on_event: OnEvent,
    clock: Callable[[], float] = time.monotonic,
    pool: FoldPool | None = None,
) -> tuple[list[RunResult], list[dict[str, Any]]]:
    """Train the planned runs in order; a run whose estimate no longer fits before `deadline`
    is skipped (and said so), and time that earlier runs saved widens the next run's epochs.
    Students are left for `train_students` (their time is kept for them), the search for
    `kit.planning.search` (seeds keep its time). Returns the runs and
    one outcome row per planned run that is not a student."""
    if pool is None or pool.workers < 2:
        return _train_in_order(comp, plan, deadline, device, on_event, clock)
    return _train_in_pool(comp, plan, deadline, on_event, clock, pool)


PSEUDO_WEIGHT = 0.5  # the pseudo labels' loss weight (benchmarks/pseudo_labels.py)


def train_students(
    comp: Competition,
    plan: Plan,
    pseudo_id: str,
    deadline: float,
    *,
    device: str | None,
    on_event: OnEvent,
    clock: Callable[[], float] = time.monotonic,
    pool: FoldPool | None = None,
) -> tuple[list[RunResult], list[dict[str, Any]]]:
    """Train the plan's students on the pseudo-label set `pseudo_id`, as `train_plan` does."""
    students = tuple(
        replace(
            r,
            overrides={**r.overrides, "pseudo": pseudo_id, "pseudo_weight": PSEUDO_WEIGHT},
            student=False,
        )
        for r in plan.runs
        if r.student
    )
    return train_plan(
        comp, replace(plan, runs=students, search=None), deadline, device=device, on_event=on_event,
        clock=clock, pool=pool,
    )  # fmt: skip


def _fit_to_time(
    planned: PlannedRun, later: list[PlannedRun], left: float
) -> tuple[PlannedRun | None, str]:
    """The run as it should start with `left` seconds to go and `later` runs still to come:
    longer (up to its max_epochs) when time was saved; shorter (down to its min_epochs) when
    time ran short; None when not even its minimum fits."""
    if planned.candidate is None:
        return (planned, "") if planned.seconds <= left else (None, f"skipped: {left:.0f} s left")
    slack = left - sum(r.seconds for r in later)
    epochs = min(
        planned.max_epochs,
        max(planned.epochs, planned.candidate.epochs_within(slack, planned.folds)),
    )
    if epochs > planned.epochs:
        return planned.with_epochs(epochs), f"{epochs - planned.epochs} more epochs (time saved)"
    if planned.seconds <= left:
        return planned, ""
    fits = min(planned.epochs, planned.candidate.epochs_within(left, planned.folds))
    if fits < planned.candidate.entry.min_epochs:
        return None, f"skipped: {left:.0f} s were left"
    return planned.with_epochs(fits), f"{planned.epochs - fits} fewer epochs (time ran short)"


def _held(plan: Plan, planned: PlannedRun) -> float:
    """Time `planned` must leave to the plan's search: a seed's (planned after the search, in
    the time it left), never a first run's (the search builds on those)."""
    return plan.search_seconds if planned.seed > 0 else 0.0


def _train_in_order(comp, plan, deadline, device, on_event, clock):
    runs, outcome = [], []
    for i, planned in enumerate(plan.runs):
        if planned.student:
            continue
        started_at = clock()
        later = [r for j, r in enumerate(plan.runs) if j > i or r.student]  # students wait
        planned, note = _fit_to_time(planned, later, deadline - started_at - _held(plan, planned))
        if planned is None:
            outcome.append(outcome_row(plan.runs[i], None, 0.0, note))
            continue
        text = f"{planned.name}: {planned.epochs} epochs ({i + 1}/{len(plan.runs)})"
        on_event(Event("tune", "run", i, len(plan.runs), text, planned))
        overrides = {**planned.overrides, "seed": planned.seed}
        result = train_run(
            comp, planned.family, overrides, epochs=planned.epochs, device=device, on_event=on_event
        )
        runs.append(result)
        outcome.append(outcome_row(planned, result, clock() - started_at, note))
    return runs, outcome


def _train_in_pool(comp, plan, deadline, on_event, clock, pool: FoldPool):
    schedule = _PoolSchedule(comp, plan, deadline, on_event, clock, pool)
    schedule.run()
    return schedule.collect()


@dataclass
class _PoolSchedule:
    """One queue of folds over all runs: a worker that frees up takes the next fold of a
    started run, else the next run starts (checked against the deadline then)."""

    comp: Competition
    plan: Plan
    deadline: float
    on_event: OnEvent
    clock: Callable[[], float]
    pool: FoldPool
    todo: list[PlannedRun] = field(default_factory=list)
    active: list[_Started] = field(default_factory=list)
    results: dict[str, tuple[PlannedRun, RunResult, float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    reserved: list[PlannedRun] = field(default_factory=list)  # students: their time is kept

    def run(self) -> None:
        self.todo = [r for r in self.plan.runs if not r.student]
        self.reserved = [r for r in self.plan.runs if r.student]
        while True:
            while self._running() < self.pool.workers and (self._queued() or self.todo):
                if self._queued() or self._start_next():
                    self._submit_next()
            if not self.active:
                return
            self._collect_done(self.pool.wait_any([f for s in self.active for f in s.running]))

    def _in_flight(self) -> float:
        """The estimated seconds still owed to started runs (their unfinished folds' share of
        the estimate; a running fold counts whole): the pool is not free for a new run yet."""
        owed = 0.0
        for started in self.active:
            unfinished = len(started.queued) + len(started.running)
            owed += started.planned.seconds * unfinished / max(1, started.planned.folds)
        return owed

    def _running(self) -> int:
        return sum(len(s.running) for s in self.active)

    def _queued(self) -> _Started | None:
        return next((s for s in self.active if s.queued), None)

    def _start_next(self) -> bool:
        """Start the next planned run; False when it was skipped or found trained."""
        planned = self.todo.pop(0)
        now = self.clock()
        later = self.todo + self.reserved
        left = self.deadline - now - self._in_flight() - _held(self.plan, planned)
        fitted, self.notes[planned.name] = _fit_to_time(planned, later, left)
        if fitted is None:
            return False
        i = self.plan.runs.index(planned)
        text = f"{fitted.name}: {fitted.epochs} epochs ({i + 1}/{len(self.plan.runs)})"
        self.on_event(Event("tune", "run", i, len(self.plan.runs), text, fitted))
        run = open_run(
            self.comp, fitted.family, {**fitted.overrides, "seed": fitted.seed},
            epochs=fitted.epochs, device="cpu", on_event=self.on_event,
        )  # fmt: skip
        if isinstance(run, RunResult):  # trained before
            self.results[planned.name] = (fitted, run, self.clock() - now)
            return False
        self.active.append(_Started(fitted, run, now, list(run.todo)))
        return True

    def _submit_next(self) -> None:
        started = self._queued()
        if started is None:
            return
        fold, planned = started.queued.pop(0), started.planned
        spec = RunSpec(planned.family, {**planned.overrides, "seed": planned.seed}, planned.epochs)
        started.running[self.pool.submit(spec, fold)] = fold

    def _collect_done(self, done: set[Future]) -> None:
        for started in list(self.active):
            for future in [f for f in started.running if f in done]:
                future.result()  # a worker's error stops kit run here; finished folds are kept
                started.trained.append(started.running.pop(future))
            if not started.queued and not started.running:
                self.active.remove(started)
                result = finish_run(started.run, sorted(started.trained))
                seconds = self.clock() - started.started
                self.results[started.planned.name] = (started.planned, result, seconds)

    def collect(self) -> tuple[list[RunResult], list[dict[str, Any]]]:
        runs, outcome = [], []
        for planned in self.plan.runs:
            if planned.student:
                continue
            note = self.notes.get(planned.name, "")
            if planned.name in self.results:
                ran, result, seconds = self.results[planned.name]
                runs.append(result)
                outcome.append(outcome_row(ran, result, seconds, note))
            else:
                outcome.append(outcome_row(planned, None, 0.0, note or "not started"))
        return runs, outcome


def outcome_row(planned: PlannedRun, run: RunResult | None, seconds: float, note: str) -> dict:
    """plan.json's record of what became of a planned run (None: not trained)."""
    return {
        **planned.describe(),
        "actual_seconds": round(seconds, 1),
        "run_id": run.run_id if run else None,
        "cv": run.cv_score if run else None,
        "note": note,
    }


def save_plan(comp: Competition, plan: Plan, outcome: list[dict], budget: float) -> None:
    write_json(
        comp.workspace.root / "plan.json",
        {"budget": budget, **plan.describe(), "outcome": outcome},
    )


__all__ = [
    "StackCost",
    "make_plan",
    "outcome_row",
    "save_plan",
    "student_factor",
    "train_plan",
    "train_students",
]
