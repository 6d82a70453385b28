"""Tuning's defaults, importable without Optuna (the CLI's option help reads them)."""

from __future__ import annotations

HEARTBEAT_SECONDS = 30  # a trial silent for twice this is stale (its worker died)
PRUNERS = ("median", "hyperband", "none")
DEFAULT_TRIALS = 20  # when neither a trial count nor a timeout is given
BEST_FILE = "tune_best.json"  # per family: the trained-out trials, best first
