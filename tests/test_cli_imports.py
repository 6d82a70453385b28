"""The CLI layer stays thin: importing it, `--help` and `kit fetch` load no torch, Optuna,
LightGBM or matplotlib (each command imports its library code when it runs).

Fresh interpreters (subprocesses): this test process may have loaded them already.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import typer

from kit.cli import app
from kit.cli import tune as tune_cli

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "optuna", "lightgbm", "matplotlib")
COMMANDS = (
    "fetch", "eda", "folds", "train", "tune", "stack", "submit", "run", "demo", "track", "pseudo",
    "report", "predict",
)  # fmt: skip
# Prints the heavy modules loaded so far as the last stdout line; exits with main's code.
REPORT_HEAVY = f"print(sorted(set({HEAVY!r}) & set(sys.modules)))"


def run_python(code: str, work: Path) -> subprocess.CompletedProcess[str]:
    return run_interpreter(["-c", code], work)


def run_interpreter(args: list[str], work: Path) -> subprocess.CompletedProcess[str]:
    """A fresh `python ARGS` from the repo root, with its own KIT_WORK."""
    env = {**os.environ, "KIT_WORK": str(work), "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def heavy_loaded(done: subprocess.CompletedProcess[str]) -> str:
    return done.stdout.strip().splitlines()[-1]


def test_importing_the_cli_loads_no_heavy_library(tmp_path: Path) -> None:
    done = run_python(f"import sys, kit.cli; {REPORT_HEAVY}", tmp_path)
    assert done.returncode == 0, done.stderr
    assert heavy_loaded(done) == "[]"


def test_help_lists_every_command(tmp_path: Path) -> None:
    done = run_interpreter(["-m", "kit", "--help"], tmp_path)
    assert done.returncode == 0, done.stderr
    listed = {line.strip("│ ").split(" ", 1)[0] for line in done.stdout.splitlines()}
    assert set(COMMANDS) <= listed


def test_every_command_help_loads_no_heavy_library(tmp_path: Path) -> None:
    helps = [[name, "--help"] for name in COMMANDS] + [["track", "snap", "--help"]]
    code = (
        "import sys\nfrom kit.cli import main\n"
        f"codes = [main(args) for args in {helps!r}]\n"
        "print(codes)\n" + REPORT_HEAVY
    )
    done = run_python(code, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-2] == str([0] * len(helps))
    assert heavy_loaded(done) == "[]"


def test_fetch_of_a_missing_source_fails_in_one_line_without_torch(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "facial-keypoints.zip"
    code = (
        "import sys\nfrom kit.cli import main\n"
        f"rc = main(['fetch', 'facial-keypoints', '--from', {str(missing)!r}])\n"
        f"{REPORT_HEAVY}\nsys.exit(rc)"
    )
    done = run_python(code, tmp_path / "work")
    assert done.returncode != 0
    assert heavy_loaded(done) == "[]"
    error = done.stderr.strip().splitlines()
    assert len(error) == 1, done.stderr
    assert error[0].startswith("error:") and str(missing) in error[0]
    assert "Traceback" not in done.stderr


def test_tune_option_defaults_match_the_library() -> None:
    from kit.tuning import HEARTBEAT_SECONDS, PRUNERS

    assert tune_cli.PRUNERS == PRUNERS
    assert tune_cli.HEARTBEAT_SECONDS == HEARTBEAT_SECONDS


def test_demo_option_help_states_the_library_defaults() -> None:
    from kit.demo import DemoSettings

    defaults = DemoSettings()
    demo = typer.main.get_command(app).commands["demo"]
    helps = {param.name: param.help for param in demo.params}
    assert f"(default {defaults.budget:.0f}s)" in helps["budget"]
    assert f"({defaults.n_train})" in helps["train_rows"]
    assert f"({defaults.n_test})" in helps["test_rows"]
    assert f"({defaults.input_size})" in helps["size"]
    assert defaults.epochs is None and "(planner)" in helps["epochs"]
    assert f"({defaults.folds})" in helps["folds"]
    assert "\n" not in demo.help
