"""Shared fixtures: an isolated work folder per test, the CLI runner, ../shared data, and the
torch device of the tests marked `device` (`pytest -m device --device cuda` runs them on a GPU)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from kit.cli import main
from kit.cli.plain import PROGRESS_LINE

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device for the tests marked `device`: cpu (default), cuda, cuda:N or mps",
    )


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    """The --device of this session; an unavailable one stops the session with one line."""
    from kit.errors import KitError
    from kit.training.device import resolve_device

    try:
        return resolve_device(request.config.getoption("--device"))
    except KitError as exc:
        raise pytest.UsageError(f"--device: {exc}") from None


@pytest.fixture(scope="session")
def close(device: torch.device) -> dict[str, float]:
    """assert_allclose tolerances for predictions repeated on --device: exact-ish in fp32 on a
    CPU, looser on CUDA, where kit runs in bf16 and cuDNN may pick other kernels."""
    return {"atol": 1e-4} if device.type == "cpu" else {"atol": 2e-2, "rtol": 1e-3}


# Identity grouping by the hand-made descriptor in every test, whether or not kit[faces] is
# installed (set at import, so module-scoped fixtures see it too): synthetic faces are not
# faces to the face net. tests/test_face_net.py sets it per test.
os.environ["KIT_FACE_NET_WEIGHTS"] = "off"


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

    @property
    def messages(self) -> str:
        """stderr less the progress lines that a captured run prints (kit.cli.plain): what kit
        said besides, such as its one error line."""
        lines = self.err.splitlines(keepends=True)
        return "".join(line for line in lines if not PROGRESS_LINE.match(line))


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


@pytest.fixture
def submissions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh submissions folder for the test (KIT_SUBMISSIONS)."""
    from kit.workspace import SUBMISSIONS_ENV

    folder = tmp_path / "submissions"
    monkeypatch.setenv(SUBMISSIONS_ENV, str(folder))
    return folder
