"""The Kaggle simulator (../shared/kaggle-sim) for benchmarks: start it, point the kaggle client
at it, and read a submission's public score."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIM = ROOT.parent / "shared" / "kaggle-sim" / "server.py"


def start_simulator(port: int, state: Path) -> subprocess.Popen:
    """The simulator on 127.0.0.1:`port` (no daily limit, instant scoring); this process's
    environment then points the kaggle client at it (children inherit it)."""
    command = [sys.executable, str(SIM), "--port", str(port), "--state", str(state)]
    command += ["--daily-limit", "1000", "--scoring-delay", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    os.environ.update(
        KAGGLE_API_ENVIRONMENT="LOCALHOST",
        HTTP_PROXY=f"http://127.0.0.1:{port}",
        NO_PROXY="",
        KAGGLE_USERNAME="kit-benchmarks",
        KAGGLE_KEY="anything",
    )
    return proc


def score_of(slug: str, ref: int, tries: int = 60) -> float:
    """The public score of submission `ref`, once scored."""
    from kit import kaggle

    for _ in range(tries):
        row = next((r for r in kaggle.list_submissions(slug) if r["ref"] == ref), None)
        if row and row["public_score"]:
            return float(row["public_score"])
        time.sleep(1)
    raise RuntimeError(f"submission {ref} was not scored")


def public_score(slug: str, csv: Path, message: str) -> float:
    from kit import kaggle

    return score_of(slug, kaggle.submit(slug, csv, message))
