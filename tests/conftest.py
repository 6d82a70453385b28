"""Shared fixtures: an isolated work folder per test, the CLI runner, and ../shared data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from kit.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def work_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own KIT_WORK, so nothing touches ./work."""
    work = tmp_path / "work"
    monkeypatch.setenv("KIT_WORK", str(work))
    return work


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    """Run `kit ARGS...` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip where this checkout has none beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
