"""benchmarks/gpu_check.py: its --quick CPU run starts, runs every step and writes its report;
the helpers that prepare the folder for a GPU machine."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from kit.models import list_models

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402

STEPS = ["packages", "environment", "tests", "throughput", "run", "tune"]


def test_quick_cpu_check_runs_every_step_and_writes_json_and_markdown(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--quick",
         "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    report = json.loads((out / "gpu_check.json").read_text())
    steps = {step["name"]: step for step in report["steps"]}
    assert list(steps) == STEPS
    failed = {n: s["error"][:500] for n, s in steps.items() if s["status"] != "ok"}
    assert not failed and proc.returncode == 0, (failed, proc.stdout[-2000:])

    assert steps["packages"]["result"]["torch_unchanged"]
    assert steps["environment"]["result"]["device"] == "cpu"
    assert " passed" in steps["tests"]["result"]["summary"]
    assert "failed" not in steps["tests"]["result"]["summary"]
    rows = steps["throughput"]["result"]["rows"]
    assert {row["family"] for row in rows} == set(list_models())
    assert all(row["img_s"]["auto"] > 0 and row["img_s"]["plain"] > 0 for row in rows)
    run = steps["run"]["result"]
    assert math.isfinite(run["cv"]) and run["runs"]
    assert all(json.loads(s)["bf16"] is False for r in run["runs"] for s in r["speed"])
    assert (out / "submission.csv").stat().st_size > 0
    assert steps["tune"]["result"]["workers"] == 2
    markdown = (out / "gpu_check.md").read_text()
    for name in STEPS:
        assert f"| {name} | ok |" in markdown


def test_a_failing_step_is_recorded_and_the_others_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(settings):
        raise RuntimeError("no GPU here")

    calls = []
    monkeypatch.setattr(gpu_check, "step_environment", broken)
    for name in ("packages", "tests", "throughput"):
        monkeypatch.setattr(gpu_check, f"step_{name}", lambda s, n=name: calls.append(n) or {})
    monkeypatch.setattr(gpu_check, "step_run", lambda s, scratch, out: calls.append("run") or {})
    monkeypatch.setattr(gpu_check, "step_tune", lambda s, scratch: calls.append("tune") or {})
    steps = gpu_check.run_check(gpu_check.Settings.of("cpu", quick=True), tmp_path)
    assert [s.status for s in steps] == ["ok", "failed", "ok", "ok", "ok", "ok"]
    assert calls == ["packages", "tests", "throughput", "run", "tune"]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert "no GPU here" in report["steps"][1]["error"]
    assert "## environment failed" in (tmp_path / "gpu_check.md").read_text()


def test_wheel_names_normalise_to_distributions() -> None:
    assert gpu_check.distribution(Path("SQLAlchemy-2.1.9-cp312-cp312-manylinux.whl")) == (
        "sqlalchemy"
    )
    assert gpu_check.distribution(Path("python_slugify-9.2.0-py3-none-any.whl")) == (
        "python-slugify"
    )


def test_the_prepared_wheels_cover_kits_dependencies_but_not_torch() -> None:
    names = gpu_check.kit_requirements()
    assert {"kaggle", "lightgbm", "optuna"} <= set(names)
    assert not set(names) & set(gpu_check.NOT_CARRIED)


def test_pytest_summary_is_read_from_its_closing_line() -> None:
    output = "....\n=== 25 passed, 57 deselected in 7.54s ===\n"
    assert gpu_check._pytest_summary(output) == "25 passed, 57 deselected in 7.54s"
    assert gpu_check._pytest_summary("collected nothing") == "no summary line"
