"""`kit run`'s search (the plan's `PlannedSearch`): fold-0 trials of the best run's family in the
time the planned trainings left, then the winner on all folds as one more base model.

The trials are `kit tune`'s (the same Optuna study, warm-started with the family's default and
portfolio configs, the same fold-0 objective, pruned at an epoch's end when they would overrun),
with the epochs fixed at what the base run trained. The winner must beat the base run's own
fold-0 score to be trained on the other folds. The trials run in this process
while the fold workers wait: a trial is one fold, and in one process on every core a fold takes
about as long as one of two side by side (docs/benchmarks.md, "Fold workers"), so the winner's
other folds are estimated from its own trial's seconds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from optuna.trial import FrozenTrial

from kit.competition import Competition
from kit.errors import KitError
from kit.planning.outcome import RunOutcome
from kit.planning.planner import SAFETY, Plan, PlannedRun, PlannedSearch
from kit.planning.stage import train_plan
from kit.progress import Event, OnEvent
from kit.store import RunResult
from kit.training.parallel import FoldPool


def search_after_plan(
    comp: Competition,
    plan: Plan,
    runs: list[RunResult],
    outcome: list[RunOutcome],
    deadline: float,
    *,
    device: str | None,
    on_event: OnEvent,
    pool: FoldPool | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[RunResult], list[RunOutcome]]:
    """Run `plan.search` before `deadline` (the students' time already taken out) from the
    trained `runs` and their `outcome` rows: the winner's run (none when the base run stayed
    best or time ran out) and one outcome row."""
    search = plan.search
    assert search is not None
    base = next((r for r in outcome if r.name == search.base and r.run_id), None)
    base_run = next((r for r in runs if base and r.run_id == base.run_id), None)
    if base is None or base_run is None:
        return [], [_search_row(search, None, 0.0, f"skipped: {search.base} was not trained")]
    started = clock()
    epochs = int(base.epochs)
    timeout = deadline - started - search.final_seconds
    if timeout < search.trial_seconds:
        note = f"skipped: {deadline - started:.0f} s were left"
        return [], [_search_row(search, None, 0.0, note)]
    try:
        trials = _search_trials(comp, search, epochs, timeout, device, on_event)
    except KitError as exc:  # every trial failed: the planned runs still stack
        return [], [_search_row(search, None, clock() - started, f"failed: {exc}")]
    winner = trials[0] if trials else None
    base_score = fold_zero_score(base_run)
    if winner is None or winner.value >= base_score:
        note = f"{len(trials)} trials; {search.base} stayed best (fold 0 {base_score:.4f})"
        return [], [_search_row(search, None, clock() - started, note)]
    final = _final_run(search, winner, epochs, pool)
    on_event(Event("train", "run", 0, 1, f"{final.name}: the search's winner on all folds"))
    one = Plan(folds=search.folds, seconds=final.seconds, runs=(final,))
    found, rows = train_plan(
        comp, one, deadline, device=device, on_event=on_event, clock=clock, pool=pool
    )
    note = f"{len(trials)} trials; best fold 0 {winner.value:.4f} (trial {winner.number}), "
    note += f"{search.base}'s {base_score:.4f}"
    note += f"; {rows[0].note}" if rows[0].note else ""
    return found, [_search_row(search, found[0] if found else None, clock() - started, note, final)]


def fold_zero_score(run: RunResult) -> float:
    """The run's score on fold 0 alone: what a search trial scores."""
    scores = run.manifest.fold_scores["0"]
    return float(scores["overall"])


def _search_trials(
    comp: Competition,
    search: PlannedSearch,
    epochs: int,
    timeout: float,
    device: str | None,
    on_event: OnEvent,
) -> list[FrozenTrial]:
    """Up to `search.trials` new trials within `timeout`; the study's complete trials at these
    epochs, best first."""
    import optuna

    from kit.tuning import tune
    from kit.tuning.studies import count_trials, default_storage, quiet_optuna, study_name
    from kit.tuning.tuner import best_trials

    name = study_name(comp, search.family)
    with quiet_optuna():
        try:
            done = count_trials(optuna.load_study(study_name=name, storage=default_storage(comp)))
        except KeyError:  # no study yet
            done = 0
    target = done + search.trials
    tune(
        comp, [search.family], trials=target, timeout=timeout, best_n=0, epochs=epochs,
        device=device, on_event=on_event, pictures=False,
    )  # fmt: skip
    with quiet_optuna():
        study = optuna.load_study(study_name=name, storage=default_storage(comp))
    ranked = best_trials(study, len(study.trials))
    return [t for t in ranked if t.user_attrs.get("overrides", {}).get("epochs") == epochs]


def _final_run(
    search: PlannedSearch, winner: FrozenTrial, epochs: int, pool: FoldPool | None
) -> PlannedRun:
    """The winner on all folds; its estimate from its own trial's seconds."""
    workers = pool.workers if pool is not None else 1
    trial_seconds = float(winner.duration.total_seconds()) if winner.duration else 0.0
    seconds = SAFETY * math.ceil((search.folds - 1) / workers) * trial_seconds
    overrides = {k: v for k, v in winner.user_attrs["overrides"].items() if k != "epochs"}
    name = f"{search.base}-search{winner.number}"
    return PlannedRun(name, search.family, overrides, epochs, 0, seconds, search.folds)


def _search_row(
    search: PlannedSearch,
    run: RunResult | None,
    seconds: float,
    note: str,
    final: PlannedRun | None = None,
) -> RunOutcome:
    """The search's outcome row: the planned search, named after its winner when it had one."""
    name = final.name if final else search.name
    overrides = final.overrides if final else {}
    planned = PlannedRun(name, search.family, overrides, search.epochs, 0, search.seconds)
    return RunOutcome.of(planned, run, seconds, note)


__all__ = ["search_after_plan"]
