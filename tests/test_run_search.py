"""kit run's search: fold-0 trials in the time the planned runs left, and the winner trained on
all folds only when it beats the base run's own fold 0."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_stack import one_torch_thread, tiny_competition  # noqa: F401

from kit.planning import Plan, PlannedRun
from kit.planning import search as planning_search
from kit.planning import stage as planning_stage
from kit.planning.outcome import RunOutcome
from kit.planning.planner import PlannedSearch
from kit.training.runs import train_run

SEARCH = PlannedSearch("lenet-default", "lenet", 1, trials=2, trial_seconds=10.0,
                       final_seconds=20.0, folds=3)  # fmt: skip


def base_row(run_id: str | None, epochs: int = 1) -> RunOutcome:
    planned = PlannedRun("lenet-default", "lenet", {}, epochs, 0, 30.0, 3)
    return RunOutcome(planned, actual_seconds=30.0, run_id=run_id, cv=2.0, note="")


def base_run(fold_zero: float = 1.5) -> SimpleNamespace:
    manifest = SimpleNamespace(fold_scores={"0": {"overall": fold_zero}})
    return SimpleNamespace(run_id="base", cv_score=2.0, manifest=manifest)


@dataclass
class FakeTrial:
    number: int
    value: float
    user_attrs: dict = field(default_factory=dict)
    duration: timedelta = timedelta(seconds=8)


def plan_with_search() -> Plan:
    return Plan(folds=3, seconds=100.0, runs=(), search=SEARCH)


def test_the_base_run_staying_best_trains_nothing_more(monkeypatch) -> None:
    # The trials' best (1.6) does not beat the base run's own fold 0 (1.5).
    trials = [FakeTrial(4, 1.6, {"overrides": {"epochs": 1, "lr": 0.1}}), FakeTrial(1, 1.9)]
    monkeypatch.setattr(planning_search, "_search_trials", lambda *a: trials)
    monkeypatch.setattr(planning_stage, "open_run", lambda *a, **k: pytest.fail("trained"))
    runs, (row,) = planning_search.search_after_plan(
        None, plan_with_search(), [base_run(1.5)], [base_row("base")], 1000.0, device="cpu",
        on_event=lambda e: None, clock=lambda: 0.0,
    )  # fmt: skip
    assert runs == [] and row.run_id is None
    assert "2 trials; lenet-default stayed best (fold 0 1.5000)" in row.note


def test_a_better_trial_is_trained_on_all_folds_within_the_deadline(monkeypatch) -> None:
    winner = FakeTrial(3, 1.2, {"run_id": "new", "overrides": {"epochs": 1, "lr": 0.1}})
    base = FakeTrial(0, 1.5, {"run_id": "base", "overrides": {"epochs": 1}})
    monkeypatch.setattr(planning_search, "_search_trials", lambda *a: [winner, base])
    trained = []

    class FakeRun:
        run_id, cv_score = "new-all-folds", 1.3

    def fake_open_run(comp, spec, *, device, on_event):
        family, overrides, epochs = spec.family, spec.overrides, spec.epochs
        trained.append((family, overrides, epochs))
        return FakeRun()

    monkeypatch.setattr(planning_stage, "open_run", fake_open_run)
    search = dict(device="cpu", on_event=lambda e: None, clock=lambda: 0.0)
    runs, (row,) = planning_search.search_after_plan(
        None, plan_with_search(), [base_run()], [base_row("base")], 1000.0, **search
    )
    assert trained == [("lenet", {"lr": 0.1, "seed": 0}, 1)]
    assert row.name == "lenet-default-search3" and row.cv == 1.3 and runs[0].cv_score == 1.3
    assert "best fold 0 1.2000 (trial 3)" in row.note
    # Its other 2 folds take about 2 x its trial's 8 s: trials that end 15 s before the
    # deadline leave no time for them.
    now = [0.0]

    def slow_trials(*args):
        now[0] = 25.0
        return [winner, base]

    monkeypatch.setattr(planning_search, "_search_trials", slow_trials)
    trained.clear()
    runs, (row,) = planning_search.search_after_plan(
        None, plan_with_search(), [base_run()], [base_row("base")], 40.0, device="cpu",
        on_event=lambda e: None, clock=lambda: now[0],
    )  # fmt: skip
    assert runs == [] and trained == [] and "skipped" in row.note


def test_no_search_without_its_base_run_or_time(monkeypatch) -> None:
    monkeypatch.setattr(planning_search, "_search_trials", lambda *a: pytest.fail("searched"))
    search = dict(device="cpu", on_event=lambda e: None, clock=lambda: 0.0)
    _, (row,) = planning_search.search_after_plan(
        None, plan_with_search(), [base_run()], [base_row(None)], 1000.0, **search
    )
    assert "lenet-default was not trained" in row.note
    _, (row,) = planning_search.search_after_plan(
        None,
        plan_with_search(),
        [base_run()],
        [base_row("base")],
        SEARCH.final_seconds + 5.0,
        **search,
    )
    assert row.note.startswith("skipped")


def test_search_trials_score_fold_zero_as_the_base_run_does(tmp_path: Path, monkeypatch) -> None:
    comp = tiny_competition(tmp_path, monkeypatch)
    trials = planning_search._search_trials(comp, SEARCH, 1, 600.0, "cpu", lambda e: None)
    assert len(trials) == SEARCH.trials  # the study's default config, then one TPE trial
    assert [t.value for t in trials] == sorted(t.value for t in trials)  # best first
    for trial in trials:  # a trial's value is its run's fold-0 score, as the base's is read
        run = train_run(comp, "lenet", trial.user_attrs["overrides"], folds=1, device="cpu")
        assert run.run_id == trial.user_attrs["run_id"]  # the trial's run, reused
        assert planning_search.fold_zero_score(run) == pytest.approx(trial.value, rel=1e-9)
    # Trials at other epochs are not this search's.
    assert planning_search._search_trials(comp, SEARCH, 2, 0.01, "cpu", lambda e: None) == []
