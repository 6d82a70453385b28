"""`kit run` as a library call: fetch -> plan -> folds -> train -> pseudo -> stack -> submit
within a time budget.

By default the planner spends the budget (kit.planning): it times the portfolio and the stack
here, plans the runs, their epochs and folds, trains them, then spends the time the plan held
for a search (fold-0 trials of the best run's family; the winner on all folds) and for seeds.
The stack's time is measured and reserved; the submission gets a fixed reserve. Every deadline
comes from one place (kit.planning.budget.Deadlines).

With fixed `epochs` (`kit run --epochs N`) the older rule applies (kit.planning.fixed_epochs):
its "tune" stage searches the families, then trains the best trials on all folds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from kit.competition import Competition
from kit.data.folds import FoldsResult, read_folds_meta, write_folds
from kit.fetch import FetchResult, fetch
from kit.planning import Plan
from kit.planning.budget import Deadlines, RunBudget, split_budget
from kit.planning.fill import fill_time_left
from kit.planning.fixed_epochs import search_and_train
from kit.planning.outcome import RunOutcome
from kit.planning.replan import Replanned, replan_after_runs
from kit.planning.search import search_after_plan
from kit.planning.stage import make_plan, save_plan, train_plan, train_students
from kit.progress import Event, OnEvent, ignore
from kit.stack import FEATURE_SETS, StackResult, stack
from kit.store import RunResult
from kit.submit import SubmissionResult, make_submission
from kit.training.device import resolve_device
from kit.training.parallel import FoldPool, default_workers

STAGES = ("fetch", "plan", "folds", "train", "pseudo", "stack", "submit")


def pipeline_stages(fixed_epochs: bool) -> tuple[str, ...]:
    """The stages in order: with `--epochs` the training stage searches first ("tune")."""
    return tuple("tune" if fixed_epochs and s == "train" else s for s in STAGES)


@dataclass
class PipelineResult:
    competition: str
    plan: RunBudget
    fetch: FetchResult | None
    runs: list[RunResult]
    trials: pd.DataFrame  # the tuning table (all trials of the families)
    stack: StackResult
    submission: SubmissionResult
    stage_seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    run_plan: Plan | None = None  # the planner's plan (None: fixed epochs, searched)
    plan_outcome: list[RunOutcome] = field(default_factory=list)  # planned vs happened

    @property
    def seconds(self) -> float:
        return sum(self.stage_seconds.values())


def parse_budget(text: str) -> float:
    """'20m', '90s', '1h30m' or seconds -> seconds (the same syntax as `kit tune --timeout`)."""
    from kit.durations import parse_duration

    return parse_duration(text, "--budget", hint="e.g. 90s, 20m, 2h")


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
) -> tuple[list[RunResult], list[RunOutcome]]:
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
    """fetch (from `source`, else the cache, else Kaggle) -> plan -> folds -> train -> pseudo
    -> stack -> submit (uploaded only with `upload`, and never for a competition without a
    Kaggle page: its submission is kept and its manifest says why), within about
    `budget_seconds`.

    With the planner (no `epochs`) and `pseudo`, the plan may hold a pseudo-labelled student
    of its best run: the other runs are stacked (the teacher), `kit pseudo` labels what the
    data lacks from that stack, the student trains on it, and the final stack includes it."""
    started = time.monotonic()
    seconds: dict[str, float] = {}
    with _stage("fetch", on_event, seconds):
        fetched = fetch_stage(comp, source, on_event)
    budget = split_budget(
        comp, budget_seconds, families=families, epochs=epochs, best_n=best_n, device=device,
        upload=upload and comp.on_kaggle,  # no time kept for an upload that cannot happen
    )  # fmt: skip
    stored = read_folds_meta(comp)
    folds = folds or (int(stored["k"]) if stored else None)
    trials, outcome, notes = pd.DataFrame(), [], []
    with ExitStack() as resources:
        pool = _fold_pool(comp, device, epochs, resources, on_event)
        with _stage("plan", on_event, seconds):
            run_plan = None
            if epochs is None:  # the planner decides what to train (kit run's default)
                left = budget.deadlines(started).planning_seconds(time.monotonic())
                run_plan = make_plan(
                    comp, left, device=device, families=families, folds=folds,
                    on_event=on_event, pool=pool, pseudo=pseudo,
                )  # fmt: skip
        deadlines = budget.deadlines(started, run_plan)
        with _stage("folds", on_event, seconds):
            made = folds_stage(comp, run_plan.folds if run_plan else folds, on_event)
        training = pipeline_stages(run_plan is None)[3]
        with _stage(training, on_event, seconds):
            if run_plan is None:  # fixed epochs: search the families, then train the best
                runs, trials, notes = search_and_train(
                    comp, budget, deadlines.train, made.k, device, on_event
                )
            else:
                replanned, runs, outcome = _train_the_plan(
                    comp, run_plan, deadlines, device, on_event, pool, best_n
                )
                run_plan, deadlines = replanned.plan, replanned.deadlines
                save_plan(comp, run_plan, outcome, budget_seconds)
                notes = _outcome_notes(outcome) + ([replanned.note] if replanned.note else [])
                notes += [f"not planned: {name}: {why}" for name, why in run_plan.skipped]
        with _stage("pseudo", on_event, seconds):
            if run_plan is not None and runs and any(r.student for r in run_plan.runs):
                students, rows = pseudo_stage(
                    comp, run_plan, runs, deadlines.students, best_n=best_n,
                    features=stack_features, device=device, on_event=on_event, pool=pool,
                    notes=notes,
                )  # fmt: skip
                runs, outcome = runs + students, outcome + rows
                save_plan(comp, run_plan, outcome, budget_seconds)
                notes += _outcome_notes(rows)
    if made.outdated:
        notes.insert(0, f"the folds file was {made.outdated}")
    with _stage("stack", on_event, seconds):
        stacked = stack(
            comp, runs if run_plan is not None else None, per_family=best_n,
            features=stack_features, on_event=on_event, warn=notes.append,
        )  # fmt: skip
    with _stage("submit", on_event, seconds):
        submission = make_submission(
            comp, None, subset_source=subset_source, message=message, dry_run=not upload,
            on_event=on_event,
        )  # fmt: skip
    return PipelineResult(
        competition=comp.name,
        plan=budget,
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


def _fold_pool(
    comp: Competition, device: str | None, epochs: int | None, resources: ExitStack, on_event
) -> FoldPool | None:
    """The planner's fold workers (one per CPU core); none for --epochs or a GPU."""
    workers = default_workers(resolve_device(device).type) if epochs is None else 1
    if workers < 2:
        return None
    return resources.enter_context(FoldPool(comp, workers, on_event=on_event))


def _train_the_plan(
    comp: Competition,
    run_plan: Plan,
    deadlines: Deadlines,
    device: str | None,
    on_event: OnEvent,
    pool: FoldPool | None,
    best_n: int,
) -> tuple[Replanned, list[RunResult], list[RunOutcome]]:
    """The planned runs by `deadlines.train`; then, replanned on what they left (the stack
    measured on them, the search as wide as the time left allows), the search by the new
    `deadlines.search`, and in what they all left a seed of a run close to the best (rule 10)."""
    runs, outcome = train_plan(
        comp, run_plan, deadlines.train, device=device, on_event=on_event, pool=pool
    )
    replanned = replan_after_runs(comp, run_plan, runs, outcome, deadlines)
    if replanned.note:
        on_event(Event("train", "replan", text=replanned.note))
    if replanned.plan.search is not None:
        found, rows = search_after_plan(
            comp, replanned.plan, runs, outcome, replanned.deadlines.search, device=device,
            on_event=on_event, pool=pool,
        )  # fmt: skip
        runs, outcome = runs + found, outcome + rows
    filled, seeded, rows = fill_time_left(
        comp, replanned.plan, runs, outcome, replanned.deadlines.search, per_family=best_n,
        device=device, on_event=on_event, pool=pool,
    )  # fmt: skip
    return replace(replanned, plan=filled), runs + seeded, outcome + rows


def _outcome_notes(outcome: list[RunOutcome]) -> list[str]:
    return [f"{o.name}: {o.note}" for o in outcome if o.note]


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
