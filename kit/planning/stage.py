"""`kit run`'s plan and train stages: measure the portfolio here, plan, train what was planned
while the deadline holds, and record the plan beside what happened (work/COMP/plan.json)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.errors import KitError
from kit.planning.calibrate import measure
from kit.planning.planner import FOLD_CHOICES, Plan, PlannedRun, plan_runs
from kit.planning.portfolio import load_portfolio
from kit.progress import Event, OnEvent
from kit.training.device import DeviceData, configure_cpu_threads, resolve_device
from kit.training.runs import RunResult, train_run
from kit.workspace import write_json


def make_plan(
    comp: Competition,
    seconds: float,
    *,
    device: str | None,
    families: list[str] | None,
    folds: int | None,
    on_event: OnEvent,
) -> Plan:
    """Measure every portfolio configuration that suits the device (or `families`), then plan
    `seconds` of training. `folds`: the existing folds file's k, else the planner chooses."""
    torch_device = resolve_device(device)
    if torch_device.type == "cpu":
        configure_cpu_threads()
    entries = load_portfolio()
    entries = (
        [e for e in entries if e.family in families]
        if families
        else [e for e in entries if e.runs_on(torch_device.type)]
    )
    if not entries:
        raise KitError(f"no portfolio configuration of {', '.join(families or [])}")
    train = KeypointData.load(comp.workspace.train_npz)
    test_rows = len(KeypointData.load(comp.workspace.test_npz))
    data = DeviceData.from_arrays(train.images, train.keypoints, torch_device)  # once for all
    candidates = []
    for i, entry in enumerate(entries):
        on_event(Event("plan", "measure", i, len(entries), f"timing {entry.name}"))
        candidates.append(measure(comp, entry, train, test_rows, torch_device, device_data=data))
    choices = (folds,) if folds else FOLD_CHOICES
    plan = plan_runs(candidates, seconds, fold_choices=choices)
    on_event(
        Event("plan", "planned", text=f"{len(plan.runs)} runs on {plan.folds} folds", detail=plan)
    )
    return plan


def train_plan(
    comp: Competition,
    plan: Plan,
    deadline: float,
    *,
    device: str | None,
    on_event: OnEvent,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[RunResult], list[dict[str, Any]]]:
    """Train the planned runs in order; a run whose estimate no longer fits before `deadline`
    is skipped (and said so). Returns the runs and one outcome row per planned run."""
    runs, outcome = [], []
    for i, planned in enumerate(plan.runs):
        left = deadline - clock()
        if planned.seconds > left:
            outcome.append(_row(planned, None, 0.0, f"skipped: {left:.0f} s were left"))
            continue
        text = f"{planned.name}: {planned.epochs} epochs ({i + 1}/{len(plan.runs)})"
        on_event(Event("tune", "run", i, len(plan.runs), text, planned))
        started = clock()
        overrides = {**planned.overrides, "seed": planned.seed}
        result = train_run(comp, planned.family, overrides, epochs=planned.epochs, device=device)
        runs.append(result)
        outcome.append(_row(planned, result, clock() - started, ""))
    return runs, outcome


def _row(planned: PlannedRun, run: RunResult | None, seconds: float, note: str) -> dict:
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
