"""`kit run`'s last training step (planner rule 10): the time the planned runs and the search
left before the stack's reserve buys a seed of a run as good as the best, at the pace it
really trained.

The replanned stack's reserve counts one model for the search's winner; a search without one
leaves that slot, and its final's time, to the seed. On fkd-proxy at 30 minutes such a search
left a quarter of the budget unused (docs/benchmarks.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from kit.competition import Competition
from kit.planning.outcome import RunOutcome
from kit.planning.planner import Plan, seed_for_time_left
from kit.planning.stage import train_plan
from kit.progress import Event, OnEvent
from kit.store import RunResult
from kit.training.parallel import FoldPool


def trained_paces(outcome: list[RunOutcome]) -> dict[str, tuple[int, float]]:
    """Each trained row's epochs and the share of its estimate its training took."""
    return {
        o.name: (o.epochs, o.actual_seconds / o.planned.seconds if o.planned.seconds else 0.0)
        for o in outcome
        if o.run_id
    }


def fill_time_left(
    comp: Competition,
    plan: Plan,
    runs: list[RunResult],
    outcome: list[RunOutcome],
    deadline: float,
    *,
    per_family: int,
    device: str | None,
    on_event: OnEvent,
    pool: FoldPool | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[Plan, list[RunResult], list[RunOutcome]]:
    """A seed of a first run in the time left before `deadline` (planner rule 10), when the
    search found no winner (its slot in the stack is free), of a family of which the stack
    takes more (`per_family`); the plan with it, and its run and outcome row (none when
    nothing fits)."""
    winner = plan.search is not None and any(
        o.run_id and o.name.startswith(f"{plan.search.base}-search") for o in outcome
    )
    trained = [o.planned.family for o in outcome if o.run_id]
    full = frozenset(f for f in trained if trained.count(f) >= per_family)  # the stack's limit
    left = deadline - clock()
    seed = None if winner else seed_for_time_left(plan, trained_paces(outcome), left, full)
    if seed is None:
        return plan, [], []
    on_event(Event("train", "fill", text=f"{seed.name}: {seed.epochs} epochs in the time left"))
    one = Plan(folds=plan.folds, seconds=seed.seconds, runs=(seed,))
    found, rows = train_plan(
        comp, one, deadline, device=device, on_event=on_event, clock=clock, pool=pool
    )
    rows = [replace(r, note=r.note or "the time the runs and the search left") for r in rows]
    return replace(plan, runs=(*plan.runs, seed)), found, rows


__all__ = ["fill_time_left", "trained_paces"]
