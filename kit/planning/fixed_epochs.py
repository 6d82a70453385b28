"""`kit run --epochs N`: the older rule beside the planner. An Optuna search of the families
(fold 0 of each trial, one family after the other) while the time left holds another trial
besides the final trainings that would be chosen if it stopped now (`finals_seconds`); then the
best trials on all folds, each family's best first, each only if its estimated cost
((K - 1) x its fold-0 seconds) still fits. The single best trial is always trained, so there is
something to stack even when the budget is too small; a started trial runs to its end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pandas as pd

from kit import tuning  # as a module: tests stand in for its `tune`
from kit.competition import Competition
from kit.errors import KitError
from kit.planning.budget import RunBudget
from kit.progress import OnEvent
from kit.store import RunResult


def search_and_train(
    comp: Competition,
    plan: RunBudget,
    deadline: float,
    k: int,
    device: str | None,
    on_event: OnEvent,
) -> tuple[list[RunResult], pd.DataFrame, list[str]]:
    """Search the families one trial at a time, round robin, while the final trainings still
    fit before `deadline`; then train the best trials that fit the time left on all folds.
    Returns (runs, trials table, notes)."""
    notes: list[str] = []
    trials = search_round_robin(comp, plan, deadline, k, device, on_event, notes)
    chosen = choose_finals(trials, plan.best_n, k, deadline - time.monotonic())
    runs: list[RunResult] = []
    for family, n in chosen.items():
        result = tuning.tune(
            comp, [family], trials=finished_trials(trials, family), best_n=n,
            epochs=plan.epochs, device=device, on_event=on_event,
        )  # fmt: skip
        runs += result.best_runs.get(family, [])
    searched = set(trials.family) if len(trials) else set()
    notes += [
        f"{family}: no time left to train its best trial on all folds"
        for family in sorted(searched - set(chosen))
    ]
    return runs, trials, notes


def finished_trials(trials: pd.DataFrame, family: str) -> int:
    """Complete + pruned trials of `family`'s study (what kit.tuning's `trials` target counts)."""
    if trials.empty:
        return 0
    mine = trials[trials.family == family]
    return int(mine.state.isin(["COMPLETE", "PRUNED"]).sum())


def search_round_robin(
    comp: Competition,
    plan: RunBudget,
    deadline: float,
    k: int,
    device: str | None,
    on_event: OnEvent,
    notes: list[str],
    clock: Callable[[], float] = time.monotonic,
) -> pd.DataFrame:
    """One trial per family in turn while the time to `deadline` holds the family's previous
    trial's length besides the final trainings that would be chosen now (`finals_seconds`).
    Every family gets its first trial. A family whose trials fail twice in a row is dropped
    (its error goes to `notes`)."""
    try:
        table = tuning.tuning_table(comp, families=plan.families)
    except KitError:  # no study yet
        table = pd.DataFrame(columns=["family", "state"])
    done = {f: finished_trials(table, f) for f in plan.families}
    last: dict[str, float] = {}
    failures = dict.fromkeys(plan.families, 0)
    tables = {f: table[table.family == f] for f in plan.families}
    active = list(plan.families)
    while active:
        for family in list(active):
            so_far = pd.concat([t for t in tables.values() if len(t)] or [pd.DataFrame()])
            left = deadline - clock()
            spare = left - finals_seconds(so_far, plan.best_n, k, left)
            if family in last and spare < last[family]:
                active.remove(family)
                continue
            started = clock()
            try:
                result = tuning.tune(
                    comp, [family], trials=done[family] + 1, best_n=0, epochs=plan.epochs,
                    device=device, on_event=on_event,
                )  # fmt: skip
            except KitError as exc:
                failures[family] += 1
                last[family] = clock() - started
                if failures[family] >= 2:
                    notes.append(f"{family}: dropped after failed trials ({exc})")
                    active.remove(family)
                continue
            last[family] = clock() - started
            tables[family] = result.table
            count = finished_trials(result.table, family)
            failures[family] = 0 if count > done[family] else failures[family] + 1
            done[family] = count
    frames = [t for t in tables.values() if len(t)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def choose_finals(trials: pd.DataFrame, best_n: int, k: int, seconds_left: float) -> dict:
    """family -> how many of its best trials to train on all folds within `seconds_left`.

    Greedy: each family's best trial (best fold-0 score first), then each family's second
    best, ...; a trial costs (k - 1) x its fold-0 seconds. The best trial overall is always
    taken."""
    chosen: dict[str, int] = {}
    for family, _cost in _pick_finals(trials, best_n, k, seconds_left):
        chosen[family] = chosen.get(family, 0) + 1
    return chosen


def finals_seconds(trials: pd.DataFrame, best_n: int, k: int, seconds_left: float) -> float:
    """What the trainings `choose_finals` would pick now will cost."""
    return sum(cost for _family, cost in _pick_finals(trials, best_n, k, seconds_left))


def _pick_finals(
    trials: pd.DataFrame, best_n: int, k: int, seconds_left: float
) -> list[tuple[str, float]]:
    if trials.empty or best_n < 1:
        return []
    done = trials[trials.state == "COMPLETE"].dropna(subset=["score"])
    done = done.drop_duplicates(subset=["family", "key_params", "score"])  # retried trials
    ranked = done.sort_values("score").groupby("family", sort=False)
    per_family = {family: group.head(best_n) for family, group in ranked}
    picked: list[tuple[str, float]] = []
    taken: dict[str, int] = {}
    budget = seconds_left
    for rank in range(best_n):
        for family, group in per_family.items():
            if rank >= len(group) or taken.get(family, 0) != rank:
                continue  # no gaps: a family's 2nd trial only after its 1st
            seconds = float(group.iloc[rank]["seconds"])
            cost = (k - 1) * (seconds if math.isfinite(seconds) else 0.0)
            if not picked or cost <= budget:
                picked.append((family, cost))
                taken[family] = rank + 1
                budget -= cost
    return picked
