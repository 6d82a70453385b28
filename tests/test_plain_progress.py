"""Progress where there is no terminal (issue 16, part 1): plain, stamped, flushed lines per
stage, fold and trial (kit.cli.plain), the choice between them and the live view, the terminal's
step bars (kit.cli.bars), and `kit demo` writing its lines to a file while it runs."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_run import TINY_DEMO

from kit.cli.bars import StepBars
from kit.cli.plain import PROGRESS_LINE, PlainProgress, left_text, plain_stream, progress_view
from kit.console import console, err_console
from kit.planning.planner import Plan, PlannedRun
from kit.progress import Event
from kit.training.loop import EpochReport
from kit.training.runs import FoldEvent
from kit.tuning.trials import TuneEvent
from kit.workspace import SUBMISSIONS_ENV

REPO = Path(__file__).resolve().parents[1]


class Clock:
    """A fake monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Log(io.StringIO):
    """A stream that counts its flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()

    def lines(self) -> list[str]:
        return self.getvalue().splitlines()


def renderer(budget: float | None = 1800.0) -> tuple[PlainProgress, Clock, Log]:
    clock, log = Clock(), Log()
    return PlainProgress(log, budget=budget, metric="rmse", clock=clock), clock, log


def test_stage_lines_carry_the_elapsed_time_and_the_budget_left() -> None:
    show, clock, log = renderer()
    show(Event("fetch", "start"))
    clock.now += 83
    show(Event("fetch", "done", 1, 1, "83 s"))
    clock.now += 3600
    show(Event("stack", "start"))
    assert log.lines() == [
        "[00:00:00 | 30:00 left] fetch starts",
        "[00:01:23 | 28:37 left] fetch done (83 s)",
        "[01:01:23 | 31:23 over] stack starts",
    ]
    assert log.flushes == 3  # every line, at once


def test_without_a_budget_lines_carry_the_elapsed_time_alone() -> None:
    show, clock, log = renderer(budget=None)
    clock.now += 7325
    show(Event("fetch", "step", text="parsing and verifying"))
    assert log.lines() == ["[02:02:05] fetch: parsing and verifying"]
    assert PROGRESS_LINE.match(log.lines()[0])


def test_left_text_counts_hours_minutes_and_seconds() -> None:
    assert left_text(59.2) == "1:00 left"
    assert left_text(3 * 3600 + 62) == "3:01:02 left"
    assert left_text(-5) == "0:05 over"


def test_a_line_per_fold_with_its_run_score_and_time() -> None:
    show, clock, log = renderer()
    show(FoldEvent(2, 5, "start", run="lenet-4f0c2a9e1b3d").event())
    clock.now += 95
    show(FoldEvent(2, 5, "done", 2.01, 95.0, "lenet-4f0c2a9e1b3d").event())
    show(FoldEvent(0, 5, "resumed", run="lenet-4f0c2a9e1b3d").event())
    assert [line.split("] ", 1)[1] for line in log.lines()] == [
        "train: lenet-4f0c2a9e1b3d fold 2 (3/5) starts",
        "train: lenet-4f0c2a9e1b3d fold 2 (3/5) done: RMSE 2.0100 (95 s)",
        "train: lenet-4f0c2a9e1b3d fold 0 (1/5) finished earlier, reused",
    ]
    assert log.lines()[1].startswith("[00:01:35 | 28:25 left] ")


def test_a_line_per_trial_with_its_family_params_score_and_time() -> None:
    show, _clock, log = renderer()
    show(TuneEvent("trial", "sp", 3, text="trial 3 starts").event())
    end = TuneEvent("trial_end", "sp", 3, done=4, target=20, text="trial 3 complete 1.2345")
    end.state, end.value, end.params, end.seconds = "COMPLETE", 1.2345, "ep=8/8 lr=0.003", 41.6
    show(end.event())
    pruned = TuneEvent("trial_end", "sp", 4, state="PRUNED", params="ep=2/8", seconds=9.0)
    show(pruned.event())
    fold = TuneEvent("fold", "sp", 3, done=1, target=5, value=1.5, state="done", seconds=12.0)
    show(fold.event())
    assert [line.split("] ", 1)[1] for line in log.lines()] == [
        "tune: sp: trial 3 starts",
        "tune: sp trial 3 complete: RMSE 1.2345 (ep=8/8 lr=0.003; 42 s)",
        "tune: sp trial 4 pruned (ep=2/8; 9 s)",
        "tune: sp trial 3 fold 1 (2/5) done: RMSE 1.5000 (12 s)",
    ]


def test_the_plan_in_one_line_with_its_runs() -> None:
    show, _clock, log = renderer()
    runs = (
        PlannedRun("lenet-default", "lenet", {}, 8, 0, 120.0, 5),
        PlannedRun("sp-default", "sp", {}, 5, 0, 300.0, 5),
    )
    show(Event("plan", "planned", text="2 runs on 5 folds", detail=Plan(5, 600.0, runs)))
    (line,) = log.lines()
    assert line.endswith(
        "plan: 2 runs on 5 folds, about 420 s: lenet-default (8 ep), sp-default (5 ep)"
    )


def epoch(number: int, of: int = 100, fold: int = 1, run: str = "sp-123") -> Event:
    report = EpochReport(fold, "main", number, of, 0.5, 2.0, 1.9, 1.0, run=run)
    return Event("train", "epoch", number, of, report.line(), report)


def test_epochs_are_thinned_to_one_line_every_so_often() -> None:
    show, clock, log = renderer()
    for number in range(1, 101):  # one epoch a second
        show(epoch(number))
        clock.now += 1
    shown = [line.split("] ", 1)[1] for line in log.lines()]
    assert shown[0] == "train: sp-123 fold 1 epoch 1/100 val 2.0000 (best 1.9000)"
    assert [s.split(" epoch ")[1].split()[0] for s in shown] == [
        "1/100", "31/100", "61/100", "91/100",
    ]  # fmt: skip


def test_counted_steps_are_thinned_but_the_last_prints() -> None:
    show, clock, log = renderer()
    for step in range(46):
        show(Event("stack", "step", step, 45, f"coordinate {step}"))
        clock.now += 1
    shown = [line.split("] ", 1)[1] for line in log.lines()]
    assert shown == [
        "stack: coordinate 0", "stack: coordinate 30", "stack: coordinate 45",
    ]  # fmt: skip


def test_a_repeated_heartbeat_prints_once() -> None:
    show, clock, log = renderer()
    for _ in range(3):
        show(TuneEvent("search", "sp", done=2, target=5, text="1 running").event())
        clock.now += 10
    show(TuneEvent("search", "sp", done=3, target=5, text="0 running").event())
    assert len(log.lines()) == 2


# ---------------------------------------------------------------- which view, where


@pytest.fixture
def terminals(monkeypatch: pytest.MonkeyPatch):
    """Set whether stdout and stderr count as terminals (as rich's consoles see them)."""

    def set_terminals(stdout: bool, stderr: bool) -> None:
        monkeypatch.setattr(console, "_force_terminal", stdout)
        monkeypatch.setattr(err_console, "_force_terminal", stderr)

    return set_terminals


@pytest.mark.parametrize(
    ("stdout", "stderr", "stdout_ok", "expected"),
    [
        (False, False, True, "stderr"),  # nohup, CI, a notebook: where the live view was
        (True, False, True, "stderr"),  # 2> log
        (False, True, True, "stdout"),  # kit run > run.log: the log gets the lines
        (False, True, False, None),  # --format json > out.json: stdout is data
        (True, True, True, None),  # a terminal: the live view alone
    ],
)
def test_plain_lines_go_where_there_is_no_terminal(
    terminals, stdout: bool, stderr: bool, stdout_ok: bool, expected: str | None
) -> None:
    terminals(stdout, stderr)
    stream = plain_stream(stdout_ok=stdout_ok)
    assert stream is (None if expected is None else getattr(sys, expected))


class FakeLive:
    """A live view that records what it was shown."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.entered = False

    def __enter__(self) -> FakeLive:
        self.entered = True
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def __call__(self, event: Event) -> None:
        self.events.append(event)


def test_without_a_terminal_the_lines_replace_the_live_view(terminals, capsys) -> None:
    terminals(stdout=False, stderr=False)
    live = FakeLive()
    with progress_view(lambda: live, budget=60.0) as on_event:
        on_event(Event("fetch", "start"))
    assert not live.entered
    assert "fetch starts" in capsys.readouterr().err


def test_a_terminal_on_stderr_keeps_the_live_view_and_stdout_gets_the_lines(
    terminals, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminals(stdout=False, stderr=True)
    out = Log()
    monkeypatch.setattr(sys, "stdout", out)
    live = FakeLive()
    with progress_view(lambda: live, budget=60.0) as on_event:
        on_event(Event("fetch", "start"))
    assert live.entered and [e.what for e in live.events] == ["start"]
    assert out.lines()[0].endswith("fetch starts") and out.flushes == 1


# ---------------------------------------------------------------- terminal bars


def test_step_bars_follow_a_fold_from_start_to_end() -> None:
    bars = StepBars()
    assert not bars
    bars(FoldEvent(2, 5, "start", run="lenet-4f0c2a9e1b3d").event())
    bars(epoch(3, 20))  # another run's fold 1: its own bar
    bars(epoch(4, 20, fold=2, run="lenet-4f0c2a9e1b3d"))
    tasks = {t.description: t for t in bars.progress.tasks}
    assert tasks["lenet-4f0c fold 2"].completed == 4 and tasks["lenet-4f0c fold 2"].total == 20
    assert tasks["sp-123 fold 1"].completed == 3
    bars(FoldEvent(2, 5, "done", 2.0, 9.0, "lenet-4f0c2a9e1b3d").event())
    assert [t.description for t in bars.progress.tasks] == ["sp-123 fold 1"]


def test_step_bars_give_each_fetch_step_its_own_pulsing_bar() -> None:
    bars = StepBars()
    bars(Event("fetch", "step", text="downloading facial-keypoints from Kaggle"))
    bars(Event("fetch", "step", text="parsing and verifying"))
    (task,) = bars.progress.tasks
    assert task.description == "fetch: parsing and verifying" and task.total is None
    bars(Event("fetch", "done"))
    assert not bars


# ---------------------------------------------------------------- kit demo > file


def test_kit_demo_writes_its_progress_to_a_file_while_it_runs(tmp_path: Path) -> None:
    """The issue's case: output to files, not a terminal. The first stage's line must be in
    the file while kit still runs, before the last stage's (not all at the end), and every
    line carries the time."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("FORCE_COLOR", "TTY_COMPATIBLE")  # would make rich call a file a terminal
    }
    env.update(PYTHONPATH=str(REPO), COLUMNS="120")
    env[SUBMISSIONS_ENV] = str(tmp_path / "submissions")
    out_path, err_path = tmp_path / "out.log", tmp_path / "err.log"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kit", "demo", *TINY_DEMO], cwd=REPO, env=env, stdout=out,
            stderr=err,
        )  # fmt: skip
        first_seen = ""  # the file when the first stage's line was first in it, kit running
        deadline = time.monotonic() + 180
        try:
            while time.monotonic() < deadline:
                text = err_path.read_text()
                if proc.poll() is not None:  # read before asking: `text` predates the exit
                    break
                if not first_seen and "fetch starts" in text:
                    first_seen = text
                time.sleep(0.05)
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    logged = err_path.read_text()
    assert code == 0, logged
    assert "] fetch starts" in first_seen, "no progress line before kit demo ended"
    assert "submit done" not in first_seen  # lines as they happen, not all at the end
    lines = [line for line in logged.splitlines() if line.strip()]
    assert all(PROGRESS_LINE.match(line) for line in lines), logged
    assert all(" left] " in line or " over] " in line for line in lines)  # a budget was given
    for expected in ("fetch starts", "fetch done (", "tune starts", "submit done ("):
        assert any(line.split("] ", 1)[1].startswith(expected) for line in lines), expected
    assert any("sp trial 0 complete: RMSE " in line for line in lines), logged
    assert any("fold 2 (3/3) done: RMSE " in line for line in lines), logged
    assert "The submission scores" in out_path.read_text()
