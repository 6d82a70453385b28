"""`kit run` replans once its planned runs are trained: the stack's reserve is measured again on
those runs' own predictions (the estimate before any run came from stand-in base models: on
ibug-68 it was 2.6x the real fit), and the time the runs saved plus the reserve so freed go
to the search, made again as wide as the time really left allows (planner rules 6 and 8).

Plain steps on the plan, its outcome and a clock; the measuring is `calibrate`'s."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from kit.competition import Competition
from kit.planning.budget import Deadlines
from kit.planning.calibrate import StackCost, measure_stack_of_runs
from kit.planning.outcome import RunOutcome
from kit.planning.planner import Plan, replan_search
from kit.store import RunResult

MeasureStack = Callable[[Competition, list[RunResult], int], StackCost | None]


@dataclass(frozen=True)
class Replanned:
    """The plan with its search made again, and the deadlines with the measured stack."""

    plan: Plan
    deadlines: Deadlines
    note: str  # one line for the run's notes ("" when nothing changed)


def replan_after_runs(
    comp: Competition,
    plan: Plan,
    runs: list[RunResult],
    outcome: list[RunOutcome],
    deadlines: Deadlines,
    *,
    clock: Callable[[], float] = time.monotonic,
    measure: MeasureStack = measure_stack_of_runs,
) -> Replanned:
    """Measure the final stack on the trained `runs` (its models: them, the search's winner
    and the students), then the search in the time left before `deadlines.search`."""
    cost = measure(comp, runs, plan.folds) if runs else None
    note = ""
    if cost is not None:
        models = len(runs) + 1 + sum(r.student for r in plan.runs)  # + a search's winner
        stack = cost(models, plan.folds)
        before = deadlines.stack_seconds - deadlines.teacher_stack_seconds
        deadlines = deadlines.with_stack(stack)
        note = f"the stack measured on the trained runs: {stack:.0f} s (reserved {before:.0f} s)"
    trained = {o.name: o.epochs for o in outcome if o.run_id}
    search = replan_search(plan, trained, deadlines.search - clock())
    return Replanned(replace(plan, search=search), deadlines, note)


__all__ = ["Replanned", "replan_after_runs"]
