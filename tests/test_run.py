"""kit run and kit demo: the budget plan, the final-training choice, and the whole pipeline at a
tiny size (1 epoch, 32 px faces), through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_kaggle import FakeKaggle, kaggle_server_fixture  # noqa: F401  (kaggle_server)
from test_stack import TINY_NAME, one_torch_thread, tiny_competition  # noqa: F401

from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.data.synthetic import fkd15_from_68, make_faces
from kit.demo import DemoSettings, answers_path, demo_competition, prepare_demo
from kit.errors import KitError
from kit.pipeline import parse_budget
from kit.planning import PortfolioEntry, planner
from kit.planning import stage as planning_stage
from kit.planning.budget import RunBudget, split_budget, stack_seconds_estimate
from kit.planning.fixed_epochs import choose_finals, finals_seconds, search_round_robin

TINY_DEMO = ("--budget", "5s", "--train-rows", "48", "--test-rows", "9", "--size", "32")
TINY_DEMO += ("--epochs", "1", "--folds", "3", "--families", "sp")


pytestmark = pytest.mark.usefixtures("submissions")  # conftest: a fresh folder


# ------------------------------------------------------------------------- the budget


def trials(rows: list[tuple[str, str, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"family": f, "state": s, "score": v, "seconds": t, "key_params": f"{f}{i}"}
            for i, (f, s, v, t) in enumerate(rows)
        ]
    )


def test_finals_take_each_familys_best_first_then_second_best_within_the_time() -> None:
    table = trials(
        [
            ("sp", "COMPLETE", 2.0, 10.0),
            ("sp", "COMPLETE", 2.5, 10.0),
            ("lenet", "COMPLETE", 3.0, 5.0),
            ("lenet", "COMPLETE", 2.8, 5.0),
            ("lenet", "PRUNED", 9.0, 1.0),
            ("heatmap", "FAIL", float("nan"), 50.0),
        ]
    )
    # k = 5: a trial costs 4 x its fold-0 seconds (sp 40, lenet 20).
    assert choose_finals(table, best_n=2, k=5, seconds_left=1000) == {"sp": 2, "lenet": 2}
    assert choose_finals(table, best_n=2, k=5, seconds_left=70) == {"sp": 1, "lenet": 1}
    assert choose_finals(table, best_n=2, k=5, seconds_left=80) == {"sp": 1, "lenet": 2}
    assert choose_finals(table, best_n=2, k=5, seconds_left=45) == {"sp": 1}
    # The best trial overall is trained even when nothing fits, so there is a submission.
    assert choose_finals(table, best_n=2, k=5, seconds_left=0) == {"sp": 1}
    assert choose_finals(table, best_n=0, k=5, seconds_left=1000) == {}
    assert choose_finals(trials([]), best_n=2, k=5, seconds_left=1000) == {}


def test_the_search_runs_until_only_the_final_trainings_fit(monkeypatch) -> None:
    """Fake 10 s trials on a fake clock: with a 200 s deadline, k = 5 and the 2 best trials to
    train on 4 more folds each (80 s), the search stops once 10 s of spare time is left."""
    import kit.tuning

    now = [0.0]
    rows: list[dict] = []

    def fake_tune(comp, families, *, trials, **_kwargs):
        while len(rows) < trials:
            now[0] += 10.0
            rows.append({"family": families[0], "state": "COMPLETE", "score": 5.0 - len(rows),
                         "seconds": 10.0, "key_params": f"config {len(rows)}"})  # fmt: skip
        return type("Result", (), {"table": pd.DataFrame(rows)})()

    monkeypatch.setattr(kit.tuning, "tune", fake_tune)
    columns = ["family", "state", "score", "seconds", "key_params"]
    monkeypatch.setattr(kit.tuning, "tuning_table", lambda *a, **k: pd.DataFrame(columns=columns))
    plan = RunBudget(
        budget=200, families=["sp"], epochs=1, best_n=2, stack_reserve=0, submit_reserve=0
    )
    table = search_round_robin(
        None, plan, 200.0, 5, "cpu", lambda _e: None, [], clock=lambda: now[0]
    )
    # 12 trials end at 120 s: 120 + 80 for the 2 finals = the deadline; a 13th would overrun.
    assert len(table) == 12 and now[0] == 120.0
    assert finals_seconds(table, best_n=2, k=5, seconds_left=80) == 80.0
    assert finals_seconds(table, best_n=2, k=5, seconds_left=50) == 40.0  # the best only
    # A slow second-best trial that would not fit does not hold the time back from the search
    # (the measured case: lenet trials of 14 s and 109 s, 193 s left, k = 5).
    slow = trials([("lenet", "COMPLETE", 2.83, 14.0), ("lenet", "COMPLETE", 3.02, 109.0)])
    assert finals_seconds(slow, best_n=2, k=5, seconds_left=193) == 56.0
    assert finals_seconds(slow, best_n=2, k=5, seconds_left=600) == 492.0
    assert finals_seconds(trials([]), best_n=2, k=5, seconds_left=100) == 0.0


def test_budget_parsing_and_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_budget("20m") == 1200 and parse_budget("1h30m") == 5400
    assert parse_budget("90") == 90
    with pytest.raises(KitError, match="--budget 'soon' is not a duration"):
        parse_budget("soon")
    comp = tiny_competition(tmp_path, monkeypatch)
    plan = split_budget(comp, 600, families=None, epochs=None, best_n=2, device="cpu", upload=False)
    assert plan.families == ["lenet"] and plan.epochs == 5  # CPU: 1 epoch / 2 budget minutes
    longer = split_budget(
        comp, 3600, families=None, epochs=None, best_n=2, device="cpu", upload=False
    )
    assert longer.families == ["lenet", "sp"] and longer.epochs == 30
    assert plan.stack_reserve == 5.0  # the floor: 60 rows stack in well under a second
    assert plan.submit_reserve == 5.0
    uploading = split_budget(
        comp, 600, families=["sp"], epochs=2, best_n=1, device="cpu", upload=True
    )
    assert uploading.families == ["sp"] and uploading.epochs == 2
    assert uploading.submit_reserve == 35.0
    assert stack_seconds_estimate(2449, 30, 5) == pytest.approx(30 * 5 * (0.02 + 0.857), rel=1e-3)
    with pytest.raises(KitError, match="must be positive"):
        split_budget(comp, 0, families=None, epochs=None, best_n=2, device="cpu", upload=False)


# ------------------------------------------------------------------------- the demo data


def test_demo_answers_are_the_drawn_test_faces(tmp_path: Path) -> None:
    comp = demo_competition(32)
    settings = DemoSettings(n_train=20, n_test=6, input_size=32, seed=3)
    folder = prepare_demo(comp, settings)
    answers = pd.read_csv(answers_path(comp))
    _, landmarks = make_faces(26, 32, seed=3)
    expected = fkd15_from_68(landmarks)[20:].reshape(6, -1)
    np.testing.assert_allclose(answers.iloc[:, 1:].to_numpy(), expected, atol=1e-4)
    assert list(answers["ImageId"]) == [1, 2, 3, 4, 5, 6]
    assert {p.name for p in folder.iterdir()} >= {"training.csv", "test.csv", "IdLookupTable.csv"}
    assert comp.workspace.root.name == "demo"  # its own work folder


# ------------------------------------------------------------------------- end to end


def independent_score(comp: Competition, csv_path: Path) -> float:
    """The demo submission's RMSE recomputed from the files alone."""
    lookup = pd.read_csv(comp.workspace.raw / "IdLookupTable.csv")
    answers = pd.read_csv(answers_path(comp)).set_index("ImageId")
    submitted = pd.read_csv(csv_path).set_index("RowId")["Location"]
    truth = [answers.at[i, f] for i, f in zip(lookup.ImageId, lookup.FeatureName, strict=True)]
    return float(np.sqrt(np.mean((submitted.loc[lookup.RowId].to_numpy() - truth) ** 2)))


def test_kit_demo_runs_the_pipeline_and_scores_its_submission(cli, submissions: Path) -> None:
    result = cli("demo", *TINY_DEMO)
    assert result.code == 0, result.err
    (csv_path,) = (submissions / "demo").glob("*.csv")
    manifest = json.loads(csv_path.with_suffix(".json").read_text())
    assert manifest["uploaded"] is False and manifest["dry_run"] is True
    assert manifest["runs"] and manifest["cv_score"] > 0
    comp = demo_competition(32)
    test = KeypointData.load(comp.workspace.test_npz)
    comp.plugin.check_submission(csv_path, comp, comp.workspace.raw, test)
    printed = re.search(r"The submission scores ([0-9.]+) RMSE", result.out)
    assert printed is not None
    assert float(printed.group(1)) == pytest.approx(independent_score(comp, csv_path), abs=1e-4)
    for text in ("mean blend", "ridge stack", "lightgbm stack", "test RMSE", "CV RMSE"):
        assert text in result.out
    for stage in ("fetch", "folds", "tune", "stack", "submit"):
        assert re.search(rf"{stage}\s+done", result.err), stage
    verdict = r"(beats its best single model|not ahead of its best single model|One model fitted)"
    assert re.search(verdict, " ".join(result.out.split()))
    assert "kit report demo" in result.out and "report.html" in "".join(result.out.split())


def test_the_demo_runs_kit_runs_planner_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default demo is what a user's `kit run` does: the planner and the portfolio, no
    fixed epochs and no family list; --epochs still gives the older search."""
    import kit.demo as demo

    seen: dict = {}

    class Stop(Exception):
        pass

    def fake_pipeline(comp, budget, **kwargs):
        seen.update(kwargs, budget=budget)
        raise Stop

    monkeypatch.setattr(demo, "prepare_demo", lambda comp, settings: None)
    monkeypatch.setattr(demo, "run_pipeline", fake_pipeline)
    with pytest.raises(Stop):
        demo.run_demo()
    assert seen["epochs"] is None and seen["families"] is None and seen["budget"] <= 180
    with pytest.raises(Stop):
        demo.run_demo(DemoSettings(epochs=2, families=("lenet",)))
    assert seen["epochs"] == 2 and seen["families"] == ["lenet"]


def test_kit_run_on_a_named_competition(
    cli,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    submissions: Path,
    kaggle_server: FakeKaggle,
) -> None:
    comp = tiny_competition(tmp_path, monkeypatch)  # data already fetched, folds written
    tiny_run = ("run", TINY_NAME, "--budget", "5s", "--epochs", "1", "--families", "sp")
    result = cli(*tiny_run)
    assert result.code == 0, result.err
    (csv_path,) = (submissions / TINY_NAME).glob("*.csv")
    manifest = json.loads(csv_path.with_suffix(".json").read_text())
    assert manifest["competition"] == TINY_NAME and manifest["uploaded"] is False
    test = KeypointData.load(comp.workspace.test_npz)
    comp.plugin.check_submission(csv_path, comp, comp.workspace.raw, test)
    for run_id in manifest["runs"]:  # every base model was trained on all folds
        run = json.loads((comp.workspace.runs / run_id / "manifest.json").read_text())
        assert run["folds"]["complete"] and run["config"]["train"]["epochs"] == 1
    assert "cached data kept" in result.err and "dry run: not uploaded" in result.out
    assert kaggle_server.calls_log == []  # a dry run never talks to Kaggle

    kaggle_server.add_competition(comp.kaggle_slug, b"")
    uploaded = cli(*tiny_run, "--upload")
    assert uploaded.code == 0, uploaded.err
    newest = max((submissions / TINY_NAME).glob("*.json"), key=lambda p: p.stat().st_mtime)
    manifest = json.loads(newest.read_text())
    assert manifest["uploaded"] is True and manifest["kaggle_ref"] in kaggle_server.received
    assert kaggle_server.received[manifest["kaggle_ref"]] == newest.with_suffix(".csv").read_bytes()


def test_kit_run_without_a_competition_is_the_demo(cli) -> None:
    refused = cli("run", "--upload")
    assert refused.code == 1 and "the demo needs no --upload" in refused.err
    unknown = cli("run", "no-such-competition")
    assert unknown.code == 1 and "unknown competition 'no-such-competition'" in unknown.err


def test_kit_run_without_epochs_follows_the_planner(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, submissions: Path
) -> None:
    """No --epochs: kit run measures the portfolio, prints the plan, trains what was planned,
    stacks those runs and prints the plan beside what happened (also in plan.json)."""
    comp = tiny_competition(tmp_path, monkeypatch)
    tiny = [
        PortfolioEntry("lenet-tiny", "lenet", {"batch_size": 16}, min_epochs=1, max_epochs=1),
        PortfolioEntry("sp-tiny", "sp", {"hidden": 16, "batch_size": 16}, 1, 1),
    ]
    monkeypatch.setattr(planning_stage, "load_portfolio", lambda: tiny)
    monkeypatch.setattr(PortfolioEntry, "for_rows", lambda entry, rows: entry)  # tested alone
    monkeypatch.setattr(planner, "MIN_SEARCH_TRIALS", 1)  # a search of one trial: quick
    monkeypatch.setattr(planner, "MAX_SEARCH_TRIALS", 1)
    monkeypatch.setattr(planner, "WIDEST_SEARCH_TRIALS", 1)
    monkeypatch.setattr(planner, "OVERTIME", 1.0)  # the tiny entries' 1 epoch, as listed
    result = cli("run", TINY_NAME, "--budget", "10m", "--pseudo")
    assert result.code == 0, result.err
    plan = json.loads((comp.workspace.root / "plan.json").read_text())
    assert [r["name"] for r in plan["outcome"][:2]] == ["lenet-tiny", "sp-tiny"]
    # The time left after the runs at their max_epochs: a search of the best run's family.
    assert plan["search"]["family"] == plan["outcome"][0]["family"]
    (searched,) = [r for r in plan["outcome"] if "-search" in r["name"]]
    assert "1 trials" in searched["note"] or "2 trials" in searched["note"], searched
    trained = [r for r in plan["outcome"] if r is not searched]
    assert all(r["run_id"] and r["cv"] > 0 and r["epochs"] == 1 for r in trained)
    assert plan["estimated_seconds"] <= plan["seconds_for_runs"]
    text = " ".join(result.out.split())
    assert re.search(r"\] plan: \d+ runs on \d+ folds, about", result.err) and "actual s" in text
    (csv_path,) = (submissions / TINY_NAME).glob("*.csv")
    manifest = json.loads(csv_path.with_suffix(".json").read_text())
    assert set(manifest["runs"]) <= {r["run_id"] for r in plan["outcome"]}
    # The best run's pseudo-labelled student: trained on a stack of the others, then stacked.
    (student,) = [r for r in plan["outcome"] if r["student"] or r["name"].endswith("-pseudo")]
    assert student["overrides"]["pseudo"].startswith("pseudo-") and student["run_id"]
    assert student["run_id"] in manifest["runs"]
    run = json.loads((comp.workspace.runs / student["run_id"] / "manifest.json").read_text())
    assert run["pseudo"]["teacher_kind"] == "stack"

    plain = cli("run", TINY_NAME, "--budget", "10m")  # no student by default
    assert plain.code == 0, plain.err
    plan = json.loads((comp.workspace.root / "plan.json").read_text())
    assert not any(r["name"].endswith("-pseudo") for r in plan["outcome"])
