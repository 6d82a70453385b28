"""kit run's planner: the portfolio, measured costs, and plans that keep the budget."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from kit.competition import load_competition
from kit.models import list_models
from kit.planning import (
    MAX_SHARE_OF_BEST,
    Candidate,
    PortfolioEntry,
    load_portfolio,
    plan_runs,
)
from kit.planning import stage as planning_stage
from kit.planning.planner import (
    MAX_SEARCH_TRIALS,
    MIN_SEARCH_TRIALS,
    OVERTIME,
    SAFETY,
    Plan,
    best_expected,
)


def candidate(name: str, epoch_s: float, min_epochs: int, max_epochs: int = 30) -> Candidate:
    entry = PortfolioEntry(name, "lenet", {}, min_epochs=min_epochs, max_epochs=max_epochs)
    return Candidate(entry, epoch_seconds=epoch_s, fold_seconds=5.0)


PORTFOLIO = [
    candidate("heatmap", 10.0, 6),
    candidate("resnet", 8.0, 4),
    candidate("lenet", 2.0, 10),
    candidate("sp", 18.0, 30),
]


@pytest.mark.parametrize("seconds", [60, 300, 900, 1800, 3600, 7200])
def test_a_plan_fits_its_time_and_every_run_reaches_its_minimum(seconds: float) -> None:
    plan = plan_runs(PORTFOLIO, seconds)
    assert plan.estimated_seconds <= seconds
    for run in plan.runs:
        entry = next(c.entry for c in PORTFOLIO if c.entry.name in run.name)
        assert entry.min_epochs <= run.epochs <= OVERTIME * entry.max_epochs
        if run.epochs > entry.max_epochs:  # rule 9: only what no other rule could use
            assert plan.seconds - plan.estimated_seconds < run.candidate.cost(1, plan.folds)
    planned = {r.name for r in plan.runs}
    for name, why in plan.skipped:
        assert name not in planned and "minimum epochs" in why


def test_a_config_that_cannot_reach_its_minimum_is_never_run() -> None:
    # sp's 30 minimum epochs at 18 s on 5 folds take 2700 s x SAFETY: not within 30 minutes.
    plan = plan_runs(PORTFOLIO, 1800)
    assert "sp" not in {r.family if r.name == "sp" else r.name for r in plan.runs}
    assert [name for name, _ in plan.skipped] == ["sp"]
    nothing = plan_runs(PORTFOLIO, 30)  # too little for anything
    assert nothing.runs == () and len(nothing.skipped) == len(PORTFOLIO)


def test_fewer_folds_only_when_the_first_fits_no_stack() -> None:
    plan = plan_runs(PORTFOLIO, 1800)
    assert len(plan.runs) >= 2 and plan.folds == 5
    # Costs at which one model fits on 5 folds, but two on 3 folds: the planner takes 3 folds.
    slow = [candidate("a", 30.0, 6), candidate("b", 30.0, 6), candidate("c", 30.0, 6)]
    five = 5 * SAFETY * (6 * 30 + 5)
    plan = plan_runs(slow, 1.5 * five)
    assert plan.folds == 3 and len(plan.runs) == 2
    # Two models on 5 folds are a stack: 3 folds would fit three, but 5 folds stay.
    assert plan_runs(slow, 2.5 * five).folds == 5


def test_a_model_much_weaker_than_the_best_is_not_run_and_its_time_goes_to_the_best() -> None:
    """No fixed model count: a run expected to err more than MAX_SHARE_OF_BEST times the best
    is dropped; two close models both run; a weak model's seed is never bought."""
    best = with_curve("best", 1.0, ((2, 0.5), (20, 0.3)))
    close = with_curve("close", 1.0, ((2, 0.55), (20, 0.33)))
    weak = with_curve("weak", 0.2, ((2, 0.6), (20, 0.5)))  # cheap, 1.6x the best at length
    plan = plan_runs([best, close, weak], 2000, fold_choices=(5,), max_seeds=3)
    names = [r.name for r in plan.runs]
    assert "weak" not in names and not any(n.startswith("weak-seed") for n in names)
    assert {"best", "close"} <= set(names)
    assert f"{0.5 / 0.3:.2f}x the best run's (best)" in dict(plan.skipped)["weak"]
    assert all(r.candidate.entry.expected(r.epochs) <= MAX_SHARE_OF_BEST * 0.3 for r in plan.runs)
    # Seeds only of the runs as good as the best: "close" (0.33) is not seeded.
    assert not any(n.startswith("close-seed") for n in names)
    alone = plan_runs([best, weak], 2000, fold_choices=(5,), max_seeds=1)
    assert [r.name for r in alone.runs] == ["best"]  # one model: the stack picks it as it is


def test_time_left_widens_epochs_to_the_maximum_then_buys_seeds() -> None:
    small = [candidate("a", 1.0, 2, max_epochs=4), candidate("b", 1.0, 2, max_epochs=3)]
    plan = plan_runs(small, 1000, fold_choices=(5,))
    assert [(r.name, r.epochs, r.seed) for r in plan.runs] == [
        ("a", 4, 0), ("b", 3, 0), ("a-seed1", 4, 1), ("b-seed1", 3, 1),
    ]  # fmt: skip


def test_the_shipped_portfolio_names_real_families_and_its_evidence() -> None:
    entries = load_portfolio()
    assert len(entries) >= 3
    for entry in entries:
        assert entry.family in list_models() and entry.evidence
        assert 1 <= entry.min_epochs <= entry.max_epochs
    on_cpu = [e.family for e in entries if e.runs_on("cpu")]
    assert len(set(on_cpu)) >= 3 and "sp" not in on_cpu  # sp cannot beat the mean shape there


def test_train_plan_skips_what_no_longer_fits_the_deadline(monkeypatch) -> None:
    now = [0.0]
    trained = []

    class FakeRun:
        def __init__(self, family: str, epochs: int):
            self.run_id, self.cv_score = f"{family}-{epochs}", 2.0

    def fake_open_run(comp, spec, *, device, on_event):
        family, overrides, epochs = spec.family, spec.overrides, spec.epochs
        trained.append((family, epochs, overrides["seed"]))
        now[0] += 100.0  # every run takes 100 s
        return FakeRun(family, epochs)

    monkeypatch.setattr(planning_stage, "open_run", fake_open_run)
    plan = plan_runs(
        [candidate("a", 8.0, 2, 4), candidate("b", 8.0, 2, 4)], 10_000, fold_choices=(3,)
    )
    runs, outcome = planning_stage.train_plan(
        None, plan, deadline=150.0, device="cpu", on_event=lambda e: None, clock=lambda: now[0]
    )
    assert len(runs) == 1 and trained == [("lenet", plan.runs[0].epochs, 0)]
    assert [row.note.startswith("skipped") for row in outcome] == [False, True, True, True]
    assert outcome[0].actual_seconds == 100.0 and outcome[0].cv == 2.0


def test_measure_times_a_configuration_in_seconds() -> None:
    import dataclasses

    import torch

    from kit.competition import load_competition
    from kit.data.arrays import KeypointData
    from kit.data.synthetic import fkd15_from_68, make_faces
    from kit.planning.calibrate import measure

    comp = dataclasses.replace(load_competition("facial-keypoints"), input_size=32)
    images, points = make_faces(80, 32, seed=1)
    data = KeypointData.whole_images(images, fkd15_from_68(points), np.arange(80))
    lenet = next(e for e in load_portfolio() if e.family == "lenet")
    measured = measure(comp, lenet, data, test_rows=20, device=torch.device("cpu"))
    assert 0 < measured.epoch_seconds < 30 and measured.fold_seconds > 0
    assert measured.cost(10, 5) > measured.cost(5, 5) > measured.cost(5, 3)


def test_a_broken_portfolio_is_named(tmp_path) -> None:
    from kit.errors import KitError

    path = tmp_path / "portfolio.toml"
    path.write_text('[[config]]\nname = "x"\nfamily = "no-such-family"\n')
    with pytest.raises(KitError, match=r"portfolio.toml: portfolio entry x: unknown family"):
        load_portfolio(path)
    path.write_text('[[config]]\nname = "y"\n')  # no family
    with pytest.raises(KitError, match=r"portfolio entry y: 'family'"):
        load_portfolio(path)
    path.write_text('[[config]]\nname = "z"\nfamily = "lenet"\ncurve = [[8, 0.5], [4, 0.6]]\n')
    with pytest.raises(KitError, match=r"portfolio entry z: curve .* epochs rising"):
        load_portfolio(path)  # a learning curve must rise in epochs
    path.write_text("[[config]\n")
    with pytest.raises(KitError, match="cannot read the portfolio"):
        load_portfolio(path)


def test_the_stack_is_reserved_from_its_cost_for_the_plans_models_and_folds() -> None:
    def stack_cost(models: int, folds: int) -> float:
        return 40.0 * models * (folds - 1) ** 2 / 16

    for seconds in (600, 1800, 3600):
        plan = plan_runs(PORTFOLIO, seconds, stack_seconds=stack_cost)
        assert plan.estimated_seconds + plan.stack_seconds <= seconds
        assert plan.stack_seconds >= stack_cost(len(plan.runs), plan.folds)
    free = plan_runs(PORTFOLIO, 1800)
    reserved = plan_runs(PORTFOLIO, 1800, stack_seconds=stack_cost)
    assert reserved.estimated_seconds < free.estimated_seconds


def test_time_saved_widens_the_next_run_and_a_late_run_is_skipped() -> None:
    plan = plan_runs([candidate("a", 10.0, 2, max_epochs=8)], 10_000, fold_choices=(3,))
    run = plan.runs[0].with_epochs(4)
    same, note = planning_stage._fit_to_time(run, [], run.seconds + 1)
    assert same.epochs == 4 and note == ""
    wider, note = planning_stage._fit_to_time(run, [], run.seconds + 3 * SAFETY * 3 * 10.0 + 1)
    assert wider.epochs == 7 and "3 more epochs" in note and wider.seconds > run.seconds
    capped, _ = planning_stage._fit_to_time(run, [], 1e6)
    assert capped.epochs == 8  # max_epochs
    kept_for_later, _ = planning_stage._fit_to_time(run, [run], 2 * run.seconds + 1)
    assert kept_for_later.epochs == 4  # the slack belongs to the run still to come
    shorter, note = planning_stage._fit_to_time(run, [], run.seconds - 1)
    assert shorter.epochs == 3 and "1 fewer epochs" in note  # time ran short: down to fit
    at_minimum = run.with_epochs(2).seconds
    skipped, note = planning_stage._fit_to_time(run, [], at_minimum - 1)
    assert skipped is None and note.startswith("skipped")  # not even its minimum fits


def test_the_stack_cost_is_measured_and_grows_with_models_and_folds() -> None:
    from kit.data.arrays import KeypointData
    from kit.data.synthetic import fkd15_from_68, make_faces
    from kit.planning.calibrate import measure_stack

    comp = dataclasses.replace(load_competition("facial-keypoints"), input_size=32)
    images, points = make_faces(300, 32, seed=1)
    keypoints = fkd15_from_68(points)
    keypoints[::2, 4:] = np.nan  # FKD-like: half the rows label 4 keypoints
    data = KeypointData.whole_images(images, keypoints, np.arange(300))
    cost = measure_stack(comp, data, images[:40], (5, 3))
    assert cost.coordinate[5] > 0 and cost.fixed >= 0
    assert cost(3, 5) > cost(3, 3) > 0 and cost(6, 5) > cost(3, 5)
    assert cost(3, 4) > cost(3, 3)  # an unmeasured fold count is scaled, not zero
    # Coordinates labelled in half the rows count about half.
    assert min(cost.label_shares) == pytest.approx(0.5, abs=0.02)


def test_a_plan_trains_in_a_pool_of_workers_and_skips_what_misses_the_deadline() -> None:
    from kit.training.parallel import FoldPool
    from tests.test_train import write_tiny_competition

    comp = write_tiny_competition()
    tiny = {"hidden": 16, "batch_size": 16}
    entry = PortfolioEntry("sp-tiny", "sp", tiny, min_epochs=1, max_epochs=1)
    other = PortfolioEntry("sp-tiny-2", "sp", {**tiny, "lr": 0.02}, min_epochs=1, max_epochs=1)
    plan = plan_runs(
        [Candidate(entry, 0.1, 0.1, workers=2), Candidate(other, 0.1, 0.1, workers=2)],
        60,
        fold_choices=(3,),
        max_seeds=1,
    )
    now = [0.0]
    with FoldPool(comp, 2) as pool:
        runs, outcome = planning_stage.train_plan(
            comp, plan, 100.0, device="cpu", on_event=lambda e: None, clock=lambda: now[0],
            pool=pool,
        )  # fmt: skip
        assert [r.manifest.folds["complete"] for r in runs] == [True, True]
        assert [row.run_id for row in outcome] == [r.run_id for r in runs]
        now[0] = 99.9  # the deadline is near: nothing new starts
        late = plan_runs([Candidate(entry, 5.0, 1.0, workers=2)], 60, fold_choices=(3,))
        runs, outcome = planning_stage.train_plan(
            comp, late, 100.0, device="cpu", on_event=lambda e: None, clock=lambda: now[0],
            pool=pool,
        )  # fmt: skip
    assert runs == [] and outcome[0].note.startswith("skipped")


def with_curve(name: str, epoch_s: float, curve: tuple, min_epochs: int = 2) -> Candidate:
    entry = PortfolioEntry(name, "lenet", {}, min_epochs=min_epochs, max_epochs=40, curve=curve)
    return Candidate(entry, epoch_seconds=epoch_s, fold_seconds=1.0)


def test_the_order_follows_the_score_expected_at_the_affordable_epochs() -> None:
    # "slow" is the best at 40 epochs but poor at the epochs a short budget affords.
    slow = with_curve("slow", 10.0, ((4, 1.1), (10, 0.6), (40, 0.3)))
    quick = with_curve("quick", 1.0, ((4, 0.6), (40, 0.45)))
    middling = with_curve("middling", 2.0, ((4, 0.7), (40, 0.5)))
    short = plan_runs([slow, quick, middling], 600, fold_choices=(5,))
    assert [r.name for r in short.runs][:2] == ["quick", "middling"]
    assert "x the best run's (quick)" in dict(short.skipped)["slow"]
    long = plan_runs([slow, quick, middling], 60_000, fold_choices=(5,))
    assert long.runs[0].name == "slow"


def test_epochs_go_where_the_curve_gains_most_per_second() -> None:
    steep = with_curve("steep", 1.0, ((2, 0.7), (20, 0.3)))
    flat = with_curve("flat", 1.0, ((2, 0.36), (20, 0.35)))
    # Time for 24 epochs in all (and each run's fixed cost): the steep curve takes them.
    plan = plan_runs([steep, flat], 5 * SAFETY * (24 + 2) + 0.1, fold_choices=(5,), max_seeds=1)
    epochs = {r.name: r.epochs for r in plan.runs}
    assert epochs == {"steep": 20, "flat": 4}


def test_expected_scores_interpolate_the_measured_curve() -> None:
    entry = PortfolioEntry("x", "lenet", curve=((4, 0.8), (16, 0.4)))
    assert entry.expected(4) == pytest.approx(0.8) and entry.expected(16) == pytest.approx(0.4)
    assert entry.expected(8) == pytest.approx(0.6)  # halfway in log(epochs)
    assert entry.expected(100) == pytest.approx(0.4) and entry.expected(1) == pytest.approx(1.0)
    assert PortfolioEntry("y", "lenet").expected(10) == 1.0  # no curve: unknown


def test_a_student_of_the_best_run_is_planned_with_its_teachers_stack() -> None:
    def stack_cost(models: int, folds: int) -> float:
        return 10.0 * models

    plan = plan_runs(PORTFOLIO, 1800, stack_seconds=stack_cost, student_factor=2.0)
    (student,) = [r for r in plan.runs if r.student]
    best = next(r for r in plan.runs if not r.student)
    assert student.name == f"{best.name}-pseudo" and student.family == best.family
    assert student.seconds >= 2.0 * best.candidate.cost(student.epochs, plan.folds) / SAFETY
    teachers = len(plan.runs) - 1
    assert plan.teacher_stack_seconds == stack_cost(teachers, plan.folds)
    assert plan.stack_seconds >= stack_cost(teachers + 1, plan.folds) + stack_cost(teachers, 5)
    assert plan.estimated_seconds + plan.stack_seconds <= 1800
    assert not any(r.name.startswith(student.name + "-seed") for r in plan.runs)
    # No room: no student, and said why.
    tight = plan_runs(PORTFOLIO[:1], 5 * SAFETY * (6 * 10 + 5) * 1.5, student_factor=2.0)
    assert not any(r.student for r in tight.runs)
    assert any(name.endswith("-pseudo") for name, _ in tight.skipped)


def test_students_wait_for_their_teacher_and_keep_their_time() -> None:
    plan = plan_runs(
        [candidate("a", 1.0, 2, max_epochs=2)],
        1000,
        fold_choices=(3,),
        max_seeds=1,
        student_factor=2.0,
    )
    assert [r.student for r in plan.runs] == [False, True]
    # The first run's slack leaves the student's time alone.
    first = plan.runs[0]
    fitted, _ = planning_stage._fit_to_time(first, [plan.runs[1]], first.seconds + 1)
    assert fitted.epochs == first.epochs
    assert planning_stage.student_factor(1000, 800, 5) == pytest.approx(2.0)


def test_folds_still_owed_to_started_runs_count_against_the_time_left() -> None:
    plan = plan_runs([candidate("a", 10.0, 2, max_epochs=2)], 1000, fold_choices=(5,))
    run = plan.runs[0]
    from kit.training.queue import FoldQueue, InProcessExecutor, QueuedRun, _Active

    queue = FoldQueue(InProcessExecutor(), clock=lambda: 0.0)
    item = QueuedRun(run.name, None, run.seconds / run.folds)
    queue._active.append(_Active(item, None, 0.0, queued=[3, 4], running={"f": 2}))
    assert queue.owed_seconds() == pytest.approx(run.seconds * 3 / 5)


def test_time_left_at_the_maximum_epochs_buys_a_search_before_seeds() -> None:
    a, b = candidate("a", 1.0, 2, max_epochs=4), candidate("b", 1.0, 2, max_epochs=3)
    trial, final = a.cost(4, 1), a.cost(4, 4)
    at_max = a.cost(4, 5) + b.cost(3, 5)
    # Room for the runs at their maximum and fewer than MIN_SEARCH_TRIALS trials: no search
    # (a seed, which fits there, is still bought).
    short = plan_runs([a, b], at_max + final + (MIN_SEARCH_TRIALS - 0.5) * trial, (5,))
    assert short.search is None and [r.name for r in short.runs] == ["a", "b", "a-seed1"]
    # Room for a search of 6 trials (the first run's family, at its epochs), no seed.
    six = plan_runs([a, b], at_max + final + 6.5 * trial, (5,))
    assert [(r.name, r.epochs) for r in six.runs] == [("a", 4), ("b", 3)]
    assert (six.search.base, six.search.epochs, six.search.trials) == ("a", 4, 6)
    assert six.search.seconds == pytest.approx(6 * trial + final)
    assert six.estimated_seconds <= six.seconds and six.models == 3
    # Seeds only once the search is at its widest.
    wide = plan_runs([a, b], at_max + final + (MAX_SEARCH_TRIALS + 1) * trial + a.cost(4, 5), (5,))
    assert wide.search.trials == MAX_SEARCH_TRIALS
    assert [r.name for r in wide.runs] == ["a", "b", "a-seed1"]


def test_no_search_while_the_runs_can_still_widen() -> None:
    plan = plan_runs(PORTFOLIO, 1800)
    assert plan.search is None and any(r.epochs < r.max_epochs for r in plan.runs)
    assert plan_runs([candidate("a", 1.0, 2, max_epochs=4)], 1000, (1,)).search is None


def test_seeds_leave_the_search_its_time_and_first_runs_do_not() -> None:
    a = candidate("a", 1.0, 2, max_epochs=4)
    plan = plan_runs([a], a.cost(4, 5) * 2 + a.cost(4, 4) + 17 * a.cost(4, 1), (5,))
    first, seed = plan.runs
    assert plan.search is not None and seed.seed == 1
    assert planning_stage._held(plan, first) == 0.0
    assert planning_stage._held(plan, seed) == plan.search.seconds


def test_max_epochs_stand_for_steps_on_a_smaller_data_set() -> None:
    """A data set with a quarter of the evidence's rows may take four times the epochs (the
    same optimiser steps); the minimum and the curve stay; a larger set changes nothing."""
    from kit.planning.portfolio import REFERENCE_ROWS, steps_scale

    entry = PortfolioEntry(
        "h", "heatmap", {}, min_epochs=5, max_epochs=30, curve=((6, 0.425), (11, 0.403))
    )
    assert steps_scale(REFERENCE_ROWS) == 1.0 and steps_scale(3 * REFERENCE_ROWS) == 1.0
    small = entry.for_rows(REFERENCE_ROWS // 4)
    assert small.max_epochs == 120 and small.min_epochs == 5 and small.curve == entry.curve
    assert entry.for_rows(REFERENCE_ROWS) is entry and entry.for_rows(10 * REFERENCE_ROWS) is entry


def test_make_plan_gives_the_planner_entries_for_the_competition_rows(monkeypatch) -> None:
    seen = {}

    class Planned(Exception):
        """Stops make_plan once the planner has its candidates."""

    def fake_plan_runs(candidates, seconds, **kwargs):
        seen["entries"] = [c.entry for c in candidates]
        raise Planned

    class Split:
        images, keypoints = np.zeros((150, 4, 4), np.uint8), None

        def __len__(self) -> int:
            return 150

    monkeypatch.setattr(planning_stage, "plan_runs", fake_plan_runs)
    monkeypatch.setattr(planning_stage, "measure_stack", lambda *a, **k: 1.0)
    monkeypatch.setattr(
        planning_stage,
        "measure",
        lambda comp, entry, *a, **k: Candidate(entry, epoch_seconds=1.0, fold_seconds=1.0),
    )
    monkeypatch.setattr(planning_stage.KeypointData, "load", lambda path: Split())
    monkeypatch.setattr(planning_stage.DeviceData, "from_arrays", lambda *a: None)
    with pytest.raises(Planned):
        planning_stage.make_plan(
            load_competition("facial-keypoints"), 600, device="cpu", families=None, folds=5,
            on_event=lambda e: None,
        )  # fmt: skip
    shipped = {e.name: e for e in load_portfolio()}
    assert seen["entries"] and all(
        e == shipped[e.name].for_competition("facial-keypoints").for_rows(150)
        and e.max_epochs > shipped[e.name].max_epochs
        for e in seen["entries"]
    )
    judged = [e for e in seen["entries"] if "facial-keypoints" in shipped[e.name].curves]
    assert all(e.curve == shipped[e.name].curves["facial-keypoints"] for e in judged)


SIZES = [  # a generated portfolio's span: each step up costs more and errs less at length
    with_curve("small", 2.0, ((10, 0.55), (40, 0.45)), min_epochs=10),
    with_curve("medium", 10.0, ((6, 0.45), (30, 0.35)), min_epochs=6),
    with_curve("large", 100.0, ((10, 0.4), (60, 0.25)), min_epochs=10),
    with_curve("huge", 600.0, ((10, 0.35), (80, 0.2)), min_epochs=10),
]


def faster(candidates: list[Candidate], speedup: float) -> list[Candidate]:
    return [
        dataclasses.replace(
            c, epoch_seconds=c.epoch_seconds / speedup, fold_seconds=c.fold_seconds / speedup
        )
        for c in candidates
    ]


@pytest.mark.parametrize("speedup", [10, 100])
@pytest.mark.parametrize("budget", [600.0, 1800.0, 3600.0])
def test_a_faster_machine_spends_its_budget_on_larger_configurations(
    speedup: int, budget: float
) -> None:
    """Cost models 10x and 100x faster than this CPU (a GPU): the plan spends at least 95 % of
    its budget and trains a larger configuration than this machine's plan could."""
    here = plan_runs(SIZES, budget, fold_choices=(5,))
    plan = plan_runs(faster(SIZES, speedup), budget, fold_choices=(5,))
    assert 0.95 * budget <= plan.estimated_seconds <= plan.seconds
    cost = {c.entry.name: c.epoch_seconds for c in SIZES}
    assert max(cost[r.name.split("-")[0]] for r in plan.runs) > max(
        cost[r.name.split("-")[0]] for r in here.runs
    )
    assert best_expected(plan.runs) < best_expected(here.runs)


@pytest.mark.parametrize("speedup", [10, 100])
def test_time_left_past_every_max_epochs_widens_the_search(speedup: int) -> None:
    """Once every run is at its max_epochs and the seeds are bought, the rest widens the
    search past MAX_SEARCH_TRIALS, so that the budget is spent."""
    fast = faster(PORTFOLIO, speedup)
    for budget in (1800.0, 3600.0):
        plan = plan_runs(fast, budget, fold_choices=(5,))
        assert 0.95 * budget <= plan.estimated_seconds <= plan.seconds
        assert all(r.epochs >= r.max_epochs for r in plan.runs)
        assert plan.search is not None and plan.search.trials > MAX_SEARCH_TRIALS
    # This machine's costs: the same budget still buys seeds before the search grows past
    # its cap (rule 8 only takes what rules 1-7 left).
    slow = plan_runs(PORTFOLIO, 1800.0, fold_choices=(5,))
    assert slow.search is None or slow.search.trials <= MAX_SEARCH_TRIALS


def test_replanning_gives_the_freed_stack_reserve_and_saved_time_to_the_search() -> None:
    """On a fake clock: the stack measured on the trained runs needs less than its reserve;
    that time, and what the runs saved, widen the search; a reserve measured larger narrows
    it, and no time left means no search."""
    from kit.planning.budget import Deadlines
    from kit.planning.outcome import RunOutcome
    from kit.planning.replan import replan_after_runs

    a = candidate("a", 1.0, 2, max_epochs=4)
    trial, final = a.cost(4, 1), a.cost(4, 4)
    plan = plan_runs([a], a.cost(4, 5) + final + 6.5 * trial, fold_choices=(5,), max_seeds=1)
    assert plan.search is not None and plan.search.trials == 6
    outcome = [RunOutcome.of(plan.runs[0], type("R", (), {"run_id": "r1", "cv_score": 2.0}), 9, "")]
    now = 1000.0
    deadlines = Deadlines(
        end=now + final + 6.5 * trial + 300.0 + 5.0, submit_reserve=5.0, stack_seconds=300.0
    )

    def measured(seconds: float):
        return lambda comp, runs, folds: lambda models, folds: seconds

    freed = replan_after_runs(
        None, plan, ["run"], outcome, deadlines, clock=lambda: now, measure=measured(100.0)
    )
    assert freed.deadlines.stack_seconds == 100.0 and "reserved 300 s" in freed.note
    assert freed.plan.search.trials == 6 + int(200.0 // trial)
    narrower = replan_after_runs(
        None,
        plan,
        ["run"],
        outcome,
        deadlines,
        clock=lambda: now,
        measure=measured(300.0 + 2 * trial),
    )
    assert narrower.plan.search.trials == 4
    late = replan_after_runs(
        None, plan, ["run"], outcome, deadlines, clock=lambda: now + 200, measure=measured(300.0)
    )
    assert late.plan.search is None and late.deadlines == deadlines.with_stack(300.0)


def test_time_left_buys_a_seed_of_the_best_run_at_its_real_pace() -> None:
    """Rule 10: the seed runs at the epochs that fit at the pace its run really trained (here
    0.5 of the estimate), at most the run's own epochs; none below its minimum or where its
    curve expects it over MAX_SHARE_OF_BEST times the run."""
    from kit.planning.planner import seed_for_time_left

    best = with_curve("best", 1.0, ((2, 0.9), (10, 0.5), (40, 0.3)))
    plan = plan_runs([best], best.cost(40, 5), fold_choices=(5,), max_seeds=1)
    trained = {r.name: (r.epochs, 0.5) for r in plan.runs}
    assert trained == {"best": (40, 0.5)}
    at_pace = dataclasses.replace(best, epoch_seconds=0.5, fold_seconds=0.5)
    seconds = at_pace.cost(36, 5)  # 16.5 epochs at the estimate
    seed = seed_for_time_left(plan, trained, seconds + 0.01)
    assert seed is not None and (seed.name, seed.epochs, seed.seed) == ("best-seed1", 36, 1)
    assert seed.seconds == pytest.approx(seconds)
    capped = seed_for_time_left(plan, trained, 100 * seconds)
    assert capped is not None and capped.epochs == 40  # never longer than the run it repeats
    # 6 epochs expect 0.63 of the mean shape's error: over 1.25x the run's 0.3.
    assert seed_for_time_left(plan, trained, at_pace.cost(6, 5) + 0.01) is None
    assert seed_for_time_left(plan, trained, at_pace.cost(1, 5)) is None  # under its minimum
    seeded = dataclasses.replace(plan, runs=(*plan.runs, seed))
    assert seed_for_time_left(seeded, trained, seconds + 0.01).name == "best-seed2"
    assert seed_for_time_left(plan, trained, 1e6, full=frozenset({"lenet"})) is None


def test_the_seed_goes_to_a_family_the_stack_still_takes_and_fits_a_lone_runs_rounds() -> None:
    """With the best run's family full (the stack takes `per_family` of each), the seed goes
    to the next run if its curve expects it close enough; with 2 workers and 5 folds a lone
    run trains in 3 rounds, so it gets 2.5 / 3 of the time an even split would give."""
    from kit.planning.planner import seed_for_time_left

    curve = ((2, 0.9), (40, 0.3))
    heat = dataclasses.replace(with_curve("heat", 1.0, curve), workers=2)
    res_entry = dataclasses.replace(heat.entry, name="res", family="resnet")
    res = dataclasses.replace(heat, entry=res_entry)
    plan = plan_runs([heat, res], heat.cost(40, 5) * 2, fold_choices=(5,), max_seeds=1)
    assert [r.name for r in plan.runs] == ["heat", "res"]
    trained = {"heat": (40, 1.0), "res": (40, 1.0)}
    seconds = heat.cost(38, 5)  # 31 epochs in 3 rounds: 0.35 of the mean shape's, near 0.3
    seed = seed_for_time_left(plan, trained, seconds, full=frozenset({"lenet"}))
    assert seed is not None and seed.name == "res-seed1"
    assert seed.epochs == heat.epochs_within(seconds * 2.5 / 3, 5)
    assert seed_for_time_left(plan, trained, seconds, full=frozenset({"lenet", "resnet"})) is None
    assert seed_for_time_left(plan, {}, 1e6) is None  # nothing trained: nothing to repeat


def test_a_search_without_a_winner_leaves_its_time_to_a_seed(monkeypatch) -> None:
    """On a fake clock: the seed trains in the time left before the deadline when the search
    found no winner and the stack takes one more of the family; not otherwise."""
    from kit.planning.fill import fill_time_left
    from kit.planning.outcome import RunOutcome
    from kit.planning.plans import PlannedSearch

    now = [0.0]
    trained = []

    class FakeRun:
        def __init__(self, spec):
            self.run_id, self.cv_score = f"run-{spec.overrides['seed']}", 2.0

    def fake_open_run(comp, spec, *, device, on_event):
        trained.append((spec.epochs, spec.overrides["seed"]))
        now[0] += 10.0
        return FakeRun(spec)

    monkeypatch.setattr(planning_stage, "open_run", fake_open_run)
    a = with_curve("a", 1.0, ((2, 0.9), (20, 0.4)))
    plan = plan_runs([a], a.cost(20, 5), fold_choices=(5,), max_seeds=1)
    search = PlannedSearch("a", "lenet", 20, 4, a.cost(20, 1), a.cost(20, 4), 5)
    plan = dataclasses.replace(plan, search=search)
    first = RunOutcome.of(plan.runs[0], FakeRun(plan.runs[0].spec()), plan.runs[0].seconds, "")
    no_winner = RunOutcome.of(
        dataclasses.replace(plan.runs[0], name="a-search"), None, 5.0, "3 trials; a stayed best"
    )
    left = a.cost(20, 5) + 1.0
    kwargs = dict(per_family=2, device="cpu", on_event=lambda e: None, clock=lambda: now[0])
    filled, runs, rows = fill_time_left(None, plan, ["run-0"], [first, no_winner], left, **kwargs)
    assert trained == [(20, 1)] and [r.run_id for r in runs] == ["run-1"]
    assert rows[0].name == "a-seed1" and "left" in rows[0].note
    assert filled.runs[-1].name == "a-seed1"
    winner = RunOutcome.of(
        dataclasses.replace(plan.runs[0], name="a-search7"), FakeRun(plan.runs[0].spec()), 5, ""
    )
    assert fill_time_left(None, plan, [], [first, winner], left, **kwargs)[1] == []
    one_per_family = {**kwargs, "per_family": 1}
    assert fill_time_left(None, plan, [], [first, no_winner], left, **one_per_family)[1] == []
    assert fill_time_left(None, plan, [], [first, no_winner], 1.0, **kwargs)[1] == []
    assert trained == [(20, 1)]


class _FoldsAtPace:
    """A run whose folds (in process) take `speed` times their share of its estimate on a fake
    clock."""

    def __init__(self, run_id: str, fold_wall: float, now: list[float], folds: int):
        self.run_id, self.cv_score = run_id, 2.0
        self._wall, self._now, self._folds = fold_wall, now, folds

    @property
    def todo(self) -> list[int]:
        return list(range(self._folds))

    def announce(self) -> None:
        pass

    def train_here(self, fold: int):
        self._now[0] += self._wall

    def in_worker(self, fold: int):
        raise AssertionError("in process only")

    def finish(self, trained: list[int]):
        return self


def _train_at_pace(speed: float) -> tuple[list, list]:
    """A first run and its seed (the best config, max 10 epochs, 3 folds) trained to a deadline
    that fits both as planned, their folds taking `speed` times their estimates."""
    from kit.planning.planner import _run

    c = candidate("a", 10.0, 2, max_epochs=10)
    first, seed = _run(c, 10, 0, 3), _run(c, 10, 1, 3)
    plan = Plan(folds=3, seconds=first.seconds + seed.seconds, runs=(first, seed))
    now, started = [0.0], []

    def fake_open_run(comp, spec, *, device, on_event):
        started.append(spec.epochs)
        wall = speed * c.cost(spec.epochs, 3) / 3
        return _FoldsAtPace(f"a-{spec.overrides['seed']}", wall, now, 3)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(planning_stage, "open_run", fake_open_run)
        _, outcome = planning_stage.train_plan(
            None, plan, plan.seconds, device="cpu", on_event=lambda e: None, clock=lambda: now[0]
        )
    return started, outcome


def test_folds_faster_than_their_estimate_lengthen_the_runs_still_to_start() -> None:
    assert _train_at_pace(1.0)[0] == [10, 10]  # as planned: nothing saved
    started, outcome = _train_at_pace(0.5)
    # The seed starts once its first run's folds took half their estimate: the time left is
    # twice what the estimates say (the clock alone would give it 15 epochs), and the best
    # config may run past its max_epochs (rule 9), up to OVERTIME times them.
    assert started == [10, int(OVERTIME * 10)]
    assert "more epochs (time saved)" in outcome[1].note and "0.50x" in outcome[1].note
    slow, slow_outcome = _train_at_pace(1.5)
    assert slow[1] < 10 and "fewer epochs" in slow_outcome[1].note  # a slow machine: shorter


def test_the_queue_measures_its_pace_from_finished_folds() -> None:
    from kit.training.queue import MIN_PACE_FOLDS, FoldQueue, InProcessExecutor, QueuedRun

    now = [0.0]
    queue = FoldQueue(InProcessExecutor(), clock=lambda: now[0])
    assert queue.pace() == 1.0
    run = _FoldsAtPace("r", fold_wall=3.0, now=now, folds=MIN_PACE_FOLDS)
    list(queue.train([QueuedRun("r", run, fold_seconds=2.0)]))
    assert queue.pace() == pytest.approx(1.5)
    # A run found finished (no folds trained) and folds without an estimate change nothing.
    list(queue.train([QueuedRun("s", _FoldsAtPace("s", 9.0, now, 2), fold_seconds=0.0)]))
    assert queue.pace() == pytest.approx(1.5)


def test_only_the_best_config_may_run_past_its_max_epochs_on_time_saved() -> None:
    from kit.planning.planner import _run, longest_epochs

    good = with_curve("good", 1.0, ((5, 0.4), (40, 0.3)))
    weak = with_curve("weak", 1.0, ((5, 0.5), (40, 0.35)))
    runs = (_run(weak, 10, 0, 3), _run(good, 10, 0, 3), _run(good, 10, 1, 3))
    plan = Plan(folds=3, seconds=1e4, runs=runs)
    assert [longest_epochs(plan, r) for r in runs] == [40, 80, 80]
