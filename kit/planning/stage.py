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
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import KitError
from kit.planning.calibrate import StackCost, measure, measure_stack
from kit.planning.outcome import RunOutcome
from kit.planning.planner import (
    FOLD_CHOICES,
    MAX_PACE,
    Candidate,
    Plan,
    PlannedRun,
    longest_epochs,
    plan_runs,
)
from kit.planning.portfolio import PortfolioEntry, load_portfolio
from kit.progress import Event, OnEvent
from kit.store import RunResult
from kit.training.device import DeviceData, configure_cpu_threads, resolve_device
from kit.training.parallel import FoldPool
from kit.training.queue import FoldExecutor, FoldQueue, InProcessExecutor, QueuedRun
from kit.training.runs import open_run
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
    entries = [
        e.for_competition(comp.name).for_rows(len(train))
        for e in _entries(torch_device.type, families)
    ]
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


def train_plan(
    comp: Competition,
    plan: Plan,
    deadline: float,
    *,
    device: str | None,
    on_event: OnEvent,
    clock: Callable[[], float] = time.monotonic,
    pool: FoldPool | None = None,
) -> tuple[list[RunResult], list[RunOutcome]]:
    """Train the planned runs in order; a run whose estimate no longer fits before `deadline`
    is skipped (and said so), and time that earlier runs saved widens the next run's epochs,
    the estimates scaled by the pace the finished folds really trained at.
    Students are left for `train_students` (their time is kept for them), the search for
    `kit.planning.search` (seeds keep its time). Returns the runs and
    one outcome row per planned run that is not a student."""
    if pool is None or pool.workers < 2:
        return _train_planned(comp, plan, deadline, device, on_event, clock, InProcessExecutor())
    return _train_planned(comp, plan, deadline, "cpu", on_event, clock, pool)


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
) -> tuple[list[RunResult], list[RunOutcome]]:
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
    planned: PlannedRun, later: list[PlannedRun], left: float, longest: int | None = None
) -> tuple[PlannedRun | None, str]:
    """The run as it should start with `left` seconds to go (in its estimates' seconds) and
    `later` runs still to come: longer (up to `longest`, else its max_epochs) when time was
    saved; shorter (down to its min_epochs) when time ran short; None when not even its
    minimum fits."""
    if planned.candidate is None:
        return (planned, "") if planned.seconds <= left else (None, f"skipped: {left:.0f} s left")
    slack = left - sum(r.seconds for r in later)
    most = max(longest or planned.max_epochs, planned.epochs)  # planned past max_epochs: rule 9
    epochs = min(most, max(planned.epochs, planned.candidate.epochs_within(slack, planned.folds)))
    if epochs > planned.epochs:
        return planned.with_epochs(epochs), f"{epochs - planned.epochs} more epochs (time saved)"
    if planned.seconds <= left:
        return planned, ""
    fits = min(planned.epochs, planned.candidate.epochs_within(left, planned.folds))
    if fits < planned.candidate.entry.min_epochs:
        return None, f"skipped: {left:.0f} s were left"
    return planned.with_epochs(fits), f"{planned.epochs - fits} fewer epochs (time ran short)"


def _with_pace(note: str, pace: float) -> str:
    if not note or abs(pace - 1) < 0.02:
        return note
    return f"{note}; folds trained at {pace:.2f}x their estimate"


def _held(plan: Plan, planned: PlannedRun) -> float:
    """Time `planned` must leave to the plan's search: a seed's (planned after the search, in
    the time it left), never a first run's (the search builds on those)."""
    return plan.search_seconds if planned.seed > 0 else 0.0


def _planned_runs(
    comp: Competition,
    plan: Plan,
    deadline: float,
    queue: FoldQueue,
    notes: dict[str, str],
    *,
    device: str | None,
    on_event: OnEvent,
) -> Iterator[QueuedRun]:
    """The plan's runs that are not students, each fitted to the time left when the queue is
    ready for it (the seconds owed to runs in flight taken out); a skipped run's note goes to
    `notes`."""
    todo = [r for r in plan.runs if not r.student]
    reserved = [r for r in plan.runs if r.student]  # students: their time is kept for them
    while todo:
        planned = todo.pop(0)
        now = queue.clock()
        pace = min(MAX_PACE, max(1 / MAX_PACE, queue.pace()))
        # Seconds left in the estimates' units: the folds so far ran at `pace` of theirs.
        left = (deadline - now) / pace - queue.owed_seconds() - _held(plan, planned)
        longest = longest_epochs(plan, planned)
        fitted, note = _fit_to_time(planned, todo + reserved, left, longest)
        notes[planned.name] = _with_pace(note, pace)
        if fitted is None:
            continue
        i = plan.runs.index(planned)
        text = f"{fitted.name}: {fitted.epochs} epochs ({i + 1}/{len(plan.runs)})"
        on_event(Event("train", "run", i, len(plan.runs), text, fitted))
        run = open_run(comp, fitted.spec(), device=device, on_event=on_event)
        yield QueuedRun((planned.name, fitted), run, fitted.seconds / max(1, fitted.folds), now)


def _train_planned(comp, plan, deadline, device, on_event, clock, executor: FoldExecutor):
    queue = FoldQueue(executor, clock=clock)
    notes: dict[str, str] = {}
    source = _planned_runs(comp, plan, deadline, queue, notes, device=device, on_event=on_event)
    results = {f.label[0]: f for f in queue.train(source)}
    runs, outcome = [], []
    for planned in plan.runs:
        if planned.student:
            continue
        note = notes.get(planned.name, "")
        if planned.name in results:
            finished = results[planned.name]
            runs.append(finished.result)
            outcome.append(
                RunOutcome.of(finished.label[1], finished.result, finished.seconds, note)
            )
        else:
            outcome.append(RunOutcome.of(planned, None, 0.0, note or "not started"))
    return runs, outcome


def save_plan(comp: Competition, plan: Plan, outcome: list[RunOutcome], budget: float) -> None:
    rows = [o.to_json() for o in outcome]
    write_json(
        comp.workspace.root / "plan.json", {"budget": budget, **plan.describe(), "outcome": rows}
    )


__all__ = [
    "StackCost",
    "make_plan",
    "save_plan",
    "student_factor",
    "train_plan",
    "train_students",
]
