"""kit tune on a tiny synthetic competition: studies, best runs on all folds, resume, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from test_train import write_tiny_arrays

from kit.competition import PATH_ENV, Competition, load_competition
from kit.data.arrays import KeypointData
from kit.durations import parse_duration
from kit.errors import KitError
from kit.progress import Event
from kit.store import load_run
from kit.training.loop import EpochReport
from kit.tuning import (
    BEST_FILE,
    TuneEvent,
    default_storage,
    open_storage,
    studies,
    tune,
    tuning_table,
    workers,
)
from kit.tuning import trials as tuning_trials

REPO = Path(__file__).resolve().parents[1]
SIZE, N_TRAIN, N_TEST, K_FOLDS = 32, 40, 6, 2
NAME = "tiny-tune"


def write_tiny_competition(root: Path, n_train: int = N_TRAIN, seed: int = 0) -> Competition:
    """facial-keypoints at 32 px under ``root/competitions`` (loadable by name once that folder
    is on $KIT_COMPETITIONS, so worker processes find it too), with synthetic faces, FKD's
    missingness (every other row keeps only the "eight") and a 2-fold folds file."""
    source = REPO / "competitions" / "facial-keypoints"
    folder = root / "competitions" / NAME
    folder.mkdir(parents=True, exist_ok=True)
    toml = (source / "competition.toml").read_text()
    toml = toml.replace('name = "facial-keypoints"', f'name = "{NAME}"')
    toml = toml.replace("input_size = 96", f"input_size = {SIZE}")
    toml = toml.replace('module = "plugin.py"', f'module = "{source / "plugin.py"}"')
    (folder / "competition.toml").write_text(toml)
    comp = load_competition(NAME)
    assert comp.input_size == SIZE

    write_tiny_arrays(comp, n_train, N_TEST, K_FOLDS, seed)
    return comp


@pytest.fixture
def comp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Competition:
    monkeypatch.setenv(PATH_ENV, str(tmp_path / "competitions"))
    return write_tiny_competition(tmp_path)


def study_of(comp: Competition, family: str = "sp", storage: str | None = None) -> optuna.Study:
    url = storage or default_storage(comp)
    return optuna.load_study(study_name=f"{comp.name}/{family}", storage=url)


def states(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return counts


# ---------------------------------------------------------------- a tiny study, end to end


def test_tiny_study_trains_best_trials_on_all_folds(comp: Competition) -> None:
    events: list[TuneEvent] = []
    result = tune(
        comp, ["sp"], trials=3, best_n=2, epochs=1, device="cpu",
        on_event=lambda e: events.append(e.detail),
    )  # fmt: skip

    study = study_of(comp)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    assert trials[0].user_attrs["default"] is True  # the family's default config is trial 0
    # --epochs fixes epochs: not searched, but recorded with the config the trial trained.
    assert all(
        "epochs" not in t.params and t.user_attrs["overrides"]["epochs"] == 1 for t in trials
    )
    assert len({t.params["lr"] for t in trials}) == 3  # three different configs

    best = result.best_runs["sp"]
    ranked = sorted(trials, key=lambda t: t.value)
    assert [r.run_id for r in best] == [t.user_attrs["run_id"] for t in ranked[:2]]
    data = KeypointData.load(comp.workspace.train_npz)
    for run, trial in zip(best, ranked, strict=False):
        # The trial trained fold 0 only; the final run reused it and added fold 1.
        assert run.manifest.folds["trained"] == [0, 1] and run.manifest.folds["complete"]
        assert run.trained_folds == [1] and run.resumed_folds == [0]
        assert run.manifest.fold_scores["0"]["overall"] == pytest.approx(trial.value)
        assert run.manifest.config["train"]["lr"] == pytest.approx(trial.params["lr"])
        assert run.manifest.config["train"]["epochs"] == 1
        assert run.oof.shape == (N_TRAIN, 15, 2) and np.isfinite(run.oof).all()
        np.testing.assert_array_equal(run.oof_folds, np.arange(N_TRAIN) % K_FOLDS)
        assert run.test.shape == (N_TEST, 15, 2) and np.isfinite(run.test).all()
        labelled = np.isfinite(data.keypoints)
        rmse = np.sqrt(np.mean((run.oof[labelled] - data.keypoints[labelled]) ** 2))
        assert run.cv_score == pytest.approx(rmse, rel=1e-5)
        assert load_run(comp, run.run_id).cv_score == pytest.approx(run.cv_score)
        assert (run.path / "config.json").is_file()

    # The best configs are summarised for the stack stage, best CV first.
    summary = json.loads((comp.workspace.root / BEST_FILE).read_text())
    assert [e["run_id"] for e in summary["sp"]] == sorted(
        (r.run_id for r in best), key=lambda i: load_run(comp, i).cv_score
    )
    assert all(e["overrides"]["epochs"] == 1 for e in summary["sp"])

    table = result.table
    assert list(table["trial"]) == [t.number for t in ranked]  # best fold-0 score first
    assert list(table["state"]) == ["COMPLETE"] * 3
    np.testing.assert_allclose(table["score"], [t.value for t in ranked])
    np.testing.assert_allclose(table["cv"][:2], [r.cv_score for r in best])
    assert table["cv"][2:].isna().all() and list(table["cv_folds"]) == [2, 2, 0]
    assert (table["seconds"] > 0).all() and "lr=" in table["key_params"][0]
    kinds = {e.kind for e in events}
    assert {"search", "trial", "epoch", "trial_end", "final", "final_end"} <= kinds

    # Rerunning the same command: the target is met, and the best runs are reused as they are.
    again = tune(comp, ["sp"], trials=3, best_n=2, epochs=1, device="cpu", pictures=False)
    assert len(study_of(comp).get_trials()) == 3
    assert [r.run_id for r in again.best_runs["sp"]] == [r.run_id for r in best]
    assert all(r.reused for r in again.best_runs["sp"])


def test_more_trials_continue_the_study(comp: Competition) -> None:
    tune(comp, ["sp"], trials=2, best_n=0, epochs=1, device="cpu")
    first = {t.number: t.value for t in study_of(comp).get_trials()}
    result = tune(comp, ["sp"], trials=4, best_n=0, epochs=1, device="cpu")
    trials = study_of(comp).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert {t.number: t.value for t in trials[:2]} == first  # earlier trials kept as they were
    assert result.best_runs == {}
    assert not (comp.workspace.root / BEST_FILE).exists()


# ---------------------------------------------------------------- pruning


class RecordingTrial:
    """The part of optuna.Trial that FoldZeroReporter uses; prunes from step `prune_from`."""

    number = 7

    def __init__(self, prune_from: int | None = None) -> None:
        self.prune_from = prune_from
        self.reports: list[tuple[int, float]] = []
        self.attrs: dict = {}

    def report(self, value: float, step: int) -> None:
        assert step not in dict(self.reports), "one value per step"
        self.reports.append((step, value))

    def should_prune(self) -> bool:
        return self.prune_from is not None and self.reports[-1][0] >= self.prune_from

    def set_user_attr(self, key: str, value) -> None:
        self.attrs[key] = value


def test_pruner_gets_one_value_per_step_at_schedule_progress(comp: Competition) -> None:
    trial = RecordingTrial(prune_from=50)
    reporter = tuning_trials.FoldZeroReporter(trial, "sp", lambda _e: None)

    def epoch(*fields) -> Event:
        return Event("train", "epoch", detail=EpochReport(*fields))

    reporter(epoch(0, "main", 1, 4, 1.0, 5.0, 5.0, 0.1))  # 25 %: marks 10, 20
    reporter(epoch(0, "other", 1, 4, 1.0, 9.0, 9.0, 0.1))  # a second network: ignored
    reporter(epoch(1, "main", 1, 4, 1.0, 9.0, 9.0, 0.1))  # another fold: ignored
    with pytest.raises(optuna.TrialPruned, match="epoch 2/4"):
        reporter(epoch(0, "main", 2, 4, 1.0, 6.0, 4.0, 0.1))  # 50 %: 30, 40, 50 -> pruned
    assert trial.reports == [(10, 5.0), (20, 5.0), (30, 4.0), (40, 4.0), (50, 4.0)]
    assert trial.attrs == {"epochs_run": 2}

    # The last epoch is never pruned: the trial is already complete.
    last = RecordingTrial(prune_from=50)
    reporter = tuning_trials.FoldZeroReporter(last, "sp", lambda _e: None)
    reporter(epoch(0, "main", 1, 1, 1.0, 3.0, 3.0, 0.1))
    assert [s for s, _ in last.reports] == list(studies.PROGRESS_MARKS)


def test_a_trial_that_would_overrun_the_timeout_stops_at_an_epoch_end() -> None:
    now = [0.0]
    trial = RecordingTrial()
    # 10 epochs at 10 s each: after epoch e the rest ends at 10 * e + 10 * (10 - e) = 100 s.
    reporter = tuning_trials.FoldZeroReporter(
        trial, "sp", lambda _e: None, deadline=95.0, clock=lambda: now[0]
    )
    now[0] = 10.0
    with pytest.raises(optuna.TrialPruned, match=r"epoch 1/10: the rest would end 5 s after"):
        reporter(Event("train", "epoch", detail=EpochReport(0, "main", 1, 10, 1.0, 5.0, 5.0, 10.0)))
    assert trial.attrs == {"epochs_run": 1, "stopped_by": "timeout"}

    on_time = tuning_trials.FoldZeroReporter(
        RecordingTrial(), "sp", lambda _e: None, deadline=100.0, clock=lambda: now[0]
    )
    epoch_one = Event("train", "epoch", detail=EpochReport(0, "main", 1, 10, 1.0, 5.0, 5.0, 10.0))
    on_time(epoch_one)  # ends exactly at 100 s
    now[0] = 200.0
    last = Event("train", "epoch", detail=EpochReport(0, "main", 10, 10, 1.0, 5.0, 5.0, 10.0))
    on_time(last)  # the last epoch: complete


def test_timeout_stops_a_slow_trial_and_the_search(comp: Competition) -> None:
    # 5000 epochs of the tiny net take minutes; a 2 s timeout stops the first trial after
    # its first epoch and starts no other.
    result = tune(comp, ["sp"], timeout=2.0, best_n=0, epochs=5000, device="cpu")
    [trial] = study_of(comp).get_trials()
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["stopped_by"] == "timeout"
    assert trial.user_attrs["epochs_run"] < 5000
    assert list(result.table["state"]) == ["PRUNED"]


def test_one_costly_trial_over_the_timeout_does_not_end_a_search_a_cheaper_one_fits() -> None:
    """kit run's search on fkd-proxy stopped after one trial (width 48, stride 2: 83 s an
    epoch) with 12 of its 30 minutes left, although the default at those epochs took 80 s."""

    def trial(state: TrialState, epochs: int, **attrs) -> optuna.trial.FrozenTrial:
        value = 1.0 if state == TrialState.COMPLETE else None
        attrs = {"overrides": {"epochs": epochs}, **attrs}
        return optuna.trial.create_trial(state=state, value=value, user_attrs=attrs)

    study = optuna.create_study()
    study.add_trial(trial(TrialState.COMPLETE, 26, fold_seconds=80.0))
    study.add_trial(trial(TrialState.COMPLETE, 10, fold_seconds=5.0))  # other epochs: not evidence
    costly = trial(TrialState.PRUNED, 26, stopped_by="timeout")
    keep = tuning_trials.keep_searching
    assert keep(study, costly, left=700.0)  # the default would fit: go on
    assert not keep(study, costly, left=60.0)  # nothing seen at 26 epochs fits in a minute
    assert keep(study, trial(TrialState.PRUNED, 26), left=1.0)  # pruned by the pruner: go on
    reused = optuna.create_study()  # a reused run's trial without its seconds is no evidence
    reused.add_trial(trial(TrialState.COMPLETE, 26))
    assert not keep(reused, costly, left=700.0)


def test_a_pruned_trial_leaves_no_run_folder(comp: Competition, monkeypatch) -> None:
    # A pruner that prunes every trial at its first report (after epoch 1 of 3).
    monkeypatch.setattr(
        studies, "make_pruner", lambda _name: optuna.pruners.ThresholdPruner(upper=0.0)
    )
    tune(comp, ["sp"], trials=2, best_n=1, epochs=3, device="cpu", pruner="median")
    study = study_of(comp)
    assert states(study) == {"PRUNED": 2}
    pruned = study.get_trials()
    assert all(t.user_attrs["epochs_run"] == 1 for t in pruned)
    assert all(list(t.intermediate_values) == [10, 20, 30] for t in pruned)
    assert not any(comp.workspace.runs.glob("*/config.json"))  # nothing half-written remains
    assert json.loads((comp.workspace.root / BEST_FILE).read_text()) == {"sp": []}


# ---------------------------------------------------------------- a killed worker


def start_worker(comp: Competition, *args: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kit", "tune", comp.name, *args],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the worker exited ({proc.returncode}) before {what}")
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_killed_worker_then_rerun_loses_no_trial(comp: Competition, tmp_path: Path) -> None:
    url = default_storage(comp)
    storage = open_storage(url)
    worker = start_worker(
        comp, "--families", "sp", "--trials", "3", "--epochs", "6", "--best", "0",
        "--device", "cpu", "--heartbeat", "1", "--pruner", "none", log=tmp_path / "worker.log",
    )  # fmt: skip

    def killed_mid_trial() -> bool:
        try:
            study = optuna.load_study(study_name=f"{comp.name}/sp", storage=storage)
        except KeyError:
            return False
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        running = [t for t in trials if t.state == TrialState.RUNNING and t.intermediate_values]
        return bool(complete and running)

    try:
        wait_for(killed_mid_trial, 120, "a complete trial and one mid-way", worker)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    before = {t.number: (t.state, t.value) for t in study_of(comp).get_trials()}
    running = [n for n, (s, _) in before.items() if s == TrialState.RUNNING]
    complete = {n: v for n, (s, v) in before.items() if s == TrialState.COMPLETE}
    assert len(running) == 1 and complete

    time.sleep(3.5)  # the dead worker's heartbeat goes stale (> 2 x 1 s, whole seconds in SQLite)
    tune(comp, ["sp"], trials=3, best_n=0, epochs=6, device="cpu", heartbeat=1, pruner="none")
    after = study_of(comp).get_trials()
    by_number = {t.number: t for t in after}
    for number, value in complete.items():  # no completed trial lost or changed
        assert by_number[number].state == TrialState.COMPLETE
        assert by_number[number].value == value
    killed = by_number[running[0]]
    assert killed.state == TrialState.FAIL  # marked failed by the heartbeat...
    retries = [t for t in after if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params  # ...and retried once
    # The retry ran to the end: complete, or failed on its own (an aggressive config can
    # diverge: then it says why).
    retry = retries[0]
    assert retry.state == TrialState.COMPLETE or "diverged" in retry.user_attrs["error"]
    assert not [t for t in after if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert states(study_of(comp))["COMPLETE"] == 3


# ---------------------------------------------------------------- errors and the CLI


def test_bad_input_gives_one_line_errors(comp: Competition, tmp_path: Path) -> None:
    with pytest.raises(KitError, match="unknown model 'nope'"):
        tune(comp, ["nope"], trials=1)
    with pytest.raises(KitError, match="not a database URL"):
        tune(comp, ["sp"], trials=1, storage="not a url")
    with pytest.raises(KitError, match="unknown pruner"):
        tune(comp, ["sp"], trials=1, pruner="random")
    with pytest.raises(KitError, match="--trials 0"):
        tune(comp, ["sp"], trials=0)
    with pytest.raises(KitError, match="no tuning studies"):
        tuning_table(comp)
    comp.workspace.folds_csv.unlink()
    with pytest.raises(KitError, match="no folds file"):
        tune(comp, ["sp"], trials=1)
    assert parse_duration("1h30m") == 5400 and parse_duration("45") == 45
    with pytest.raises(KitError, match="not a duration"):
        parse_duration("30 minutes")


def test_worker_processes_get_one_gpu_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    envs = workers.worker_environments(["0", "1"], None)
    assert envs == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "1"}]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # cuda:1 of this process is GPU 5
    assert workers.worker_environments(["1"], None) == [{"CUDA_VISIBLE_DEVICES": "5"}]
    with pytest.raises(KitError, match="'2' is not a GPU index"):
        workers.worker_environments(["0", "2"], None)
    with pytest.raises(KitError, match="both given"):
        workers.worker_environments(["0"], 2)
    assert workers.worker_environments(None, 3) == [{}, {}, {}]
    assert workers.worker_environments(None, None) == []


def test_every_trial_failing_stops_with_its_error(comp: Competition, monkeypatch) -> None:
    # An lr so large that sp diverges at once: each trial fails, then the run, clearly.
    family = tuning_trials.get_family("sp")
    diverging = dataclasses.replace(
        family, search_space=lambda t: {**family.search_space(t), "lr": 1e12}
    )
    monkeypatch.setattr(tuning_trials, "get_family", lambda _name: diverging)
    with pytest.raises(KitError, match=r"every sp trial failed \(2\): .*(diverged|NaN)"):
        tune(comp, ["sp"], trials=2, best_n=1, epochs=2, device="cpu")
    assert states(study_of(comp)) == {"FAIL": 2}
    assert tuning_table(comp)["error"].str.contains("diverged|NaN").all()  # the table says why


def test_cli_tunes_then_shows_the_table(comp: Competition, cli) -> None:
    result = cli("tune", comp.name, "--families", "sp", "--trials", "2", "--best", "1",
                 "--epochs", "1", "--device", "cpu")  # fmt: skip
    assert result.code == 0, result.err
    assert "fold-0 rmse" in result.out and "CV rmse" in result.out
    (best,) = tuning_table(comp)["cv"].dropna()
    assert f"CV {best:.4f}" in result.out and "optuna-dashboard 'sqlite:///" in result.out
    shown = cli("tune", comp.name, "--show")
    assert shown.code == 0, shown.err
    table = tuning_table(comp)
    for row in table.itertuples():
        assert f"{row.score:.4f}" in shown.out
    assert "0*" in shown.out and "complete" in shown.out and f"{best:.4f}" in shown.out

    bad = cli("tune", comp.name, "--families", "sp,nope", "--trials", "1")
    assert bad.code == 1 and "unknown model 'nope'" in bad.err and "Traceback" not in bad.err
    assert cli("tune", comp.name, "--timeout", "soon").code == 1


def test_a_study_starts_from_the_portfolio_after_the_default(monkeypatch) -> None:
    from kit.planning import portfolio
    from kit.tuning.studies import open_study

    entries = [
        portfolio.PortfolioEntry("lenet-default", "lenet", {}),
        portfolio.PortfolioEntry("lenet-fast", "lenet", {"lr": 0.003, "batch_size": 32}),
        portfolio.PortfolioEntry("lenet-fast-again", "lenet", {"lr": 0.003, "batch_size": 32}),
        portfolio.PortfolioEntry("resnet-x", "resnet", {"lr": 0.01}),
    ]
    monkeypatch.setattr(portfolio, "load_portfolio", lambda: entries)
    comp = load_competition("facial-keypoints")
    storage = open_storage(default_storage(comp))
    study = open_study(comp, "lenet", storage, seed=0, fixed={}, pruner="none", target=None)
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [t.user_attrs.get("portfolio") for t in waiting] == [None, "lenet-fast"]
    queued = waiting[1].system_attrs["fixed_params"]
    assert queued["lr"] == 0.003 and queued["batch_size"] == 32
    assert waiting[0].user_attrs["default"] is True
