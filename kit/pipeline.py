"""`kit run` as a library call: fetch -> plan -> folds -> tune -> pseudo -> stack -> submit
within a time budget.

By default the planner spends the budget (kit.planning): it times the portfolio and the stack
here, plans the runs, their epochs and folds, trains them, then spends the time the plan held
for a search (fold-0 trials of the best run's family; the winner on all folds) and for seeds.
The stack's time is measured and reserved; the submission gets a fixed reserve.

With fixed `epochs` (`kit run --epochs N`) the older rule applies: an Optuna search of the
families (fold 0 of each trial, one family after the other) while the time left holds another
trial besides the final trainings that would be chosen if it stopped now (`finals_seconds`);
then the best trials on all folds, each family's best first, each only if its estimated cost
((K - 1) x its fold-0 seconds) still fits. The single best trial is always trained, so there is
something to stack even when the budget is too small; a started trial runs to its end.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kit.competition import Competition
from kit.data.folds import DEFAULT_K, FoldsResult, read_folds_meta, write_folds
from kit.errors import KitError
from kit.fetch import FetchResult, fetch
from kit.planning import Plan
from kit.planning.search import search_after_plan
from kit.planning.stage import make_plan, save_plan, train_plan, train_students
from kit.progress import Event, OnEvent, ignore
from kit.stack import FEATURE_SETS, StackResult, stack
from kit.store import RunResult
from kit.store.files import read_json
from kit.submit import SubmissionResult, make_submission
from kit.training.device import resolve_device
from kit.training.parallel import FoldPool, default_workers

STAGES = ("fetch", "plan", "folds", "tune", "pseudo", "stack", "submit")
FOLDS_ALLOWANCE = 10.0  # seconds the folds stage may take after planning (identity grouping)
# On a CPU: lenet (fast) and, from 30 minutes on, sp (the seed's Model 1: its 15488 x 500
# dense layer makes a fold ~6x slower than lenet's at 96 px, measured on this project's VM).
CPU_FAMILIES = ("lenet", "sp")
CPU_SP_BUDGET = 30 * 60


@dataclass
class BudgetPlan:
    budget: float  # seconds, whole pipeline
    families: list[str]
    epochs: int | None  # per trial (None: each family's search space decides)
    best_n: int
    stack_reserve: float
    submit_reserve: float


@dataclass
class PipelineResult:
    competition: str
    plan: BudgetPlan
    fetch: FetchResult | None
    runs: list[RunResult]
    trials: pd.DataFrame  # the tuning table (all trials of the families)
    stack: StackResult
    submission: SubmissionResult
    stage_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    run_plan: Plan | None = None  # the planner's plan (None: fixed epochs, searched)
    plan_outcome: list[dict[str, Any]] = field(default_factory=list)  # planned vs happened

    @property
    def seconds(self) -> float:
        return sum(self.stage_seconds.values())


def parse_budget(text: str) -> float:
    """'20m', '90s', '1h30m' or seconds -> seconds (the same syntax as `kit tune --timeout`)."""
    from kit.durations import parse_duration

    return parse_duration(text, "--budget", hint="e.g. 90s, 20m, 2h")


def default_families(device: str | None, budget: float) -> list[str]:
    """Every family on a GPU; on a CPU lenet, plus sp from CPU_SP_BUDGET seconds on."""
    from kit.models import list_models
    from kit.training.device import resolve_device

    if resolve_device(device).type != "cpu":
        return list_models()
    chosen = CPU_FAMILIES if budget >= CPU_SP_BUDGET else CPU_FAMILIES[:1]
    return [f for f in chosen if f in list_models()]


def default_epochs(budget: float, device: str | None) -> int | None:
    """Epochs per trial on a CPU: about one per 2 budget minutes (3..30); on a GPU the
    families' search spaces decide."""
    from kit.training.device import resolve_device

    if resolve_device(device).type != "cpu":
        return None
    return int(min(30, max(3, round(budget / 120))))


def stack_seconds_estimate(rows: int, coordinates: int, folds: int) -> float:
    """A generous guess of `kit stack`'s time: per coordinate and fold, K small LightGBM fits
    (the inner CV that picks the rounds, then the fit) on about `rows` rows; calibrated on this
    project's 2-core VM (fkd-proxy, 2449 rows x 30 coordinates x 5 folds: 86-127 s)."""
    return coordinates * folds * (0.02 + 7e-5 * rows * folds)


def plan_budget(
    comp: Competition,
    budget: float,
    *,
    families: list[str] | None,
    epochs: int | None,
    best_n: int,
    device: str | None,
    upload: bool,
) -> BudgetPlan:
    if budget <= 0:
        raise KitError(f"--budget {budget:g} s must be positive")
    rows = _cached_rows(comp)
    stored = read_folds_meta(comp)
    folds = int(stored["k"]) if stored else DEFAULT_K
    estimate = stack_seconds_estimate(rows, 2 * comp.num_keypoints, folds)
    return BudgetPlan(
        budget=budget,
        families=list(families) if families else default_families(device, budget),
        epochs=epochs if epochs is not None else default_epochs(budget, device),
        best_n=best_n,
        stack_reserve=min(max(5.0, estimate), 0.3 * budget),
        submit_reserve=5.0 + (30.0 if upload else 0.0),
    )


def _cached_rows(comp: Competition) -> int:
    checksums = comp.workspace.checksums
    if checksums.is_file():
        return int(read_json(checksums).get("counts", {}).get("train_rows", 0))
    return 0


# ------------------------------------------------------------------------- stages


def fetch_stage(comp: Competition, source: Path | str | None, on_event: OnEvent):
    """Fetch from `source`; without one, keep a cache that exists, else download from Kaggle."""
    ws = comp.workspace
    if source is None and all(p.is_file() for p in (ws.checksums, ws.train_npz, ws.test_npz)):
        on_event(Event("fetch", "step", text="cached data kept (kit fetch --force refreshes it)"))
        return None
    return fetch(comp, None if source is None else Path(source), on_event=on_event)


def folds_stage(comp: Competition, k: int | None, on_event: OnEvent) -> FoldsResult:
    """Write the folds file, or keep the existing one (without `k`, whatever its k)."""
    result = write_folds(comp, k=k)
    state = "wrote" if result.written else "kept"
    text = f"{state} {result.k} folds grouped by {result.group_by}"
    on_event(Event("folds", "step", text=text))
    return result


def tune_stage(
    comp: Competition,
    plan: BudgetPlan,
    deadline: float,
    k: int,
    device: str | None,
    on_event: OnEvent,
) -> tuple[list[RunResult], pd.DataFrame, list[str]]:
    """Search the families one trial at a time, round robin, while the final trainings still
    fit before `deadline`; then train the best trials that fit the time left on all folds.
    Returns (runs, trials table, notes)."""
    from kit.tuning import tune

    notes: list[str] = []
    trials = search_round_robin(comp, plan, deadline, k, device, on_event, notes)
    chosen = choose_finals(trials, plan.best_n, k, deadline - time.monotonic())
    runs: list[RunResult] = []
    for family, n in chosen.items():
        result = tune(
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
    plan: BudgetPlan,
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
    from kit.tuning import tune, tuning_table

    try:
        table = tuning_table(comp, families=plan.families)
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
                result = tune(
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


@contextmanager
def _stage(name: str, on_event: OnEvent, seconds: dict[str, float]) -> Iterator[None]:
    on_event(Event(name, "start"))
    started = time.monotonic()
    yield
    seconds[name] = time.monotonic() - started
    on_event(Event(name, "done", 1, 1, f"{seconds[name]:.0f} s"))


def pseudo_stage(
    comp: Competition,
    run_plan: Plan,
    runs: list[RunResult],
    deadline: float,
    *,
    best_n: int,
    features: frozenset[str],
    device: str | None,
    on_event: OnEvent,
    pool: FoldPool | None,
    notes: list[str],
) -> tuple[list[RunResult], list[dict[str, Any]]]:
    """Stack `runs` (the teacher), label what the data lacks from it, train the plan's
    students on those labels; the students and their outcome rows."""
    from kit.pseudo import make_pseudo_labels

    teacher = stack(
        comp, runs, per_family=best_n, features=features, on_event=on_event, warn=notes.append
    )
    made = make_pseudo_labels(comp, teacher.stack_id, on_event=on_event)
    return train_students(
        comp, run_plan, made.pseudo_id, deadline, device=device, on_event=on_event, pool=pool
    )


def run_pipeline(
    comp: Competition,
    budget_seconds: float,
    upload: bool = False,
    source: Path | str | None = None,
    on_event: OnEvent = ignore,
    *,
    families: list[str] | None = None,
    epochs: int | None = None,
    folds: int | None = None,
    best_n: int = 2,
    stack_features: frozenset[str] = frozenset(FEATURE_SETS),
    device: str | None = None,
    subset_source: str | None = None,
    message: str = "",
    pseudo: bool = False,
) -> PipelineResult:
    """fetch (from `source`, else the cache, else Kaggle) -> folds -> tune -> pseudo ->
    stack -> submit (uploaded only with `upload`, and never for a competition without a Kaggle
    page: its submission is kept and its manifest says why), within about `budget_seconds`.

    With the planner (no `epochs`) and `pseudo`, the plan may hold a pseudo-labelled student
    of its best run: the other runs are stacked (the teacher), `kit pseudo` labels what the
    data lacks from that stack, the student trains on it, and the final stack includes it."""
    started = time.monotonic()
    deadline_total = started + budget_seconds
    seconds: dict[str, float] = {}

    with _stage("fetch", on_event, seconds):
        fetched = fetch_stage(comp, source, on_event)
    stored = read_folds_meta(comp)
    plan = plan_budget(
        comp,
        budget_seconds,
        families=families,
        epochs=epochs,
        best_n=best_n,
        device=device,
        upload=upload and comp.on_kaggle,  # no time kept for an upload that cannot happen
    )
    deadline = deadline_total - plan.stack_reserve - plan.submit_reserve
    run_plan = None
    outcome: list[dict[str, Any]] = []
    with ExitStack() as resources:
        pool = None
        workers = default_workers(resolve_device(device).type) if epochs is None else 1
        if workers > 1:
            pool = resources.enter_context(FoldPool(comp, workers, on_event=on_event))
        with _stage("plan", on_event, seconds):
            if epochs is None:  # the planner decides what to train (kit run's default)
                left = deadline_total - plan.submit_reserve - time.monotonic() - FOLDS_ALLOWANCE
                run_plan = make_plan(
                    comp, left, device=device, families=families,
                    folds=folds or (int(stored["k"]) if stored else None), on_event=on_event,
                    pool=pool, pseudo=pseudo,
                )  # fmt: skip
                deadline = deadline_total - plan.submit_reserve - run_plan.stack_seconds
        with _stage("folds", on_event, seconds):
            made = folds_stage(comp, folds or (run_plan.folds if run_plan else None), on_event)
        k = made.k
        with _stage("tune", on_event, seconds):
            if run_plan is not None:
                runs, outcome = train_plan(
                    comp, run_plan, deadline, device=device, on_event=on_event, pool=pool
                )
                if run_plan.search is not None:
                    students = sum(r.seconds for r in run_plan.runs if r.student)
                    found, rows = search_after_plan(
                        comp, run_plan, runs, outcome, deadline - students, device=device,
                        on_event=on_event, pool=pool,
                    )  # fmt: skip
                    runs, outcome = runs + found, outcome + rows
                save_plan(comp, run_plan, outcome, budget_seconds)
                trials, notes = (
                    pd.DataFrame(),
                    [f"{r['name']}: {r['note']}" for r in outcome if r["note"]],
                )
                notes += [f"not planned: {name}: {why}" for name, why in run_plan.skipped]
            else:  # fixed epochs: search the families, then train the best trials on all folds
                runs, trials, notes = tune_stage(comp, plan, deadline, k, device, on_event)
        with _stage("pseudo", on_event, seconds):
            if run_plan is not None and runs and any(r.student for r in run_plan.runs):
                final_stack = run_plan.stack_seconds - run_plan.teacher_stack_seconds
                student_deadline = deadline_total - plan.submit_reserve - final_stack
                students, rows = pseudo_stage(
                    comp, run_plan, runs, student_deadline, best_n=best_n,
                    features=stack_features, device=device, on_event=on_event, pool=pool,
                    notes=notes,
                )  # fmt: skip
                runs, outcome = runs + students, outcome + rows
                save_plan(comp, run_plan, outcome, budget_seconds)
                notes += [f"{r['name']}: {r['note']}" for r in rows if r["note"]]
    if made.outdated:
        notes.insert(0, f"the folds file was {made.outdated}")
    with _stage("stack", on_event, seconds):
        stacked = stack(
            comp,
            runs if run_plan is not None else None,
            per_family=best_n,
            features=stack_features,
            on_event=on_event,
            warn=lambda text: notes.append(text),
        )
    with _stage("submit", on_event, seconds):
        submission = make_submission(
            comp,
            None,
            subset_source=subset_source,
            message=message,
            dry_run=not upload,
            on_event=on_event,
        )
    return PipelineResult(
        competition=comp.name,
        plan=plan,
        fetch=fetched,
        runs=runs,
        trials=trials,
        stack=stacked,
        submission=submission,
        stage_seconds=seconds,
        notes=notes,
        run_plan=run_plan,
        plan_outcome=outcome,
    )


def summary(result: PipelineResult) -> dict[str, Any]:
    """A JSON-able digest (for logs and benchmarks)."""
    return {
        "competition": result.competition,
        "budget": result.plan.budget,
        "seconds": result.seconds,
        "stages": result.stage_seconds,
        "families": result.plan.families,
        "epochs": result.plan.epochs,
        "runs": [r.run_id for r in result.runs],
        "stack": result.stack.stack_id,
        "stack_cv": result.stack.cv_score,
        "submission": str(result.submission.path),
        "submitted": result.submission.manifest.source["id"],
        "notes": result.notes,
    }
