"""The trials table: one row per trial of a competition's studies (the CLI prints it)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import optuna
import pandas as pd
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial

from kit.competition import Competition
from kit.errors import KitError
from kit.tuning.studies import default_storage, open_storage

# The params the table shows, with short labels (every param is in the `params` column).
KEY_PARAMS = {
    "lr": "lr",
    "batch_size": "bs",
    "width": "width",
    "depth": "depth",
    "hidden": "hidden",
    "dropout": "drop",
    "weight_decay": "wd",
}


def key_params(params: dict[str, Any], epochs_run: int | None = None) -> str:
    """A short 'ep=12/30 lr=0.0031 bs=64 ...' of the params that matter most."""
    parts = []
    if "epochs" in params:
        ran = f"{epochs_run}/" if epochs_run is not None else ""
        parts.append(f"ep={ran}{params['epochs']}")
    parts += [f"{label}={_short(params[k])}" for k, label in KEY_PARAMS.items() if k in params]
    return " ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _seconds(trial: FrozenTrial) -> float:
    if trial.datetime_start is None:
        return float("nan")
    end = trial.datetime_complete or datetime.now()
    return (end - trial.datetime_start).total_seconds()


TABLE_COLUMNS = (
    "family", "trial", "default", "state", "score", "cv", "cv_folds", "seconds", "epochs_run",
    "key_params", "run_id", "worker", "error", "params",
)  # fmt: skip


def tuning_table(
    comp: Competition, storage: str | None = None, families: Sequence[str] | None = None
) -> pd.DataFrame:
    """One row per trial of `comp`'s studies, per family complete trials first, best first.

    Columns: family, trial, default (the family's default config), state, score (fold 0),
    cv and cv_folds (all folds, for the trained-out trials), seconds, epochs_run, key_params,
    run_id, worker (host:pid), error (why a trial failed), params (the trial's full overrides,
    a dict).
    """
    if storage is None and not (comp.workspace.root / "tune.sqlite3").is_file():
        raise KitError(
            f"no tuning studies for {comp.name}",
            path=comp.workspace.root / "tune.sqlite3",
            hint=f"run `kit tune {comp.name}` first",
        )
    return table_from_storage(comp, open_storage(storage or default_storage(comp)), families)


def _trial_row(family: str, trial: FrozenTrial, study_attrs: dict[str, Any]) -> dict[str, Any]:
    full = study_attrs.get(f"cv:{trial.number}", {})  # written when trained on all folds
    params = trial.user_attrs.get("overrides", trial.params)
    epochs_run = trial.user_attrs.get("epochs_run")
    return {
        "family": family,
        "trial": trial.number,
        "default": bool(trial.user_attrs.get("default", False)),
        "state": trial.state.name,
        "score": trial.value if trial.value is not None else float("nan"),
        "cv": full.get("cv", float("nan")),
        "cv_folds": full.get("folds", 0),
        "seconds": _seconds(trial),
        "epochs_run": epochs_run,
        "key_params": key_params(params, epochs_run),
        "run_id": trial.user_attrs.get("run_id") or full.get("run_id"),
        "worker": trial.user_attrs.get("worker"),
        "error": trial.user_attrs.get("error"),
        "params": params,
    }


def table_from_storage(
    comp: Competition, rdb: RDBStorage, families: Sequence[str] | None
) -> pd.DataFrame:
    prefix = f"{comp.name}/"
    names = [n for n in optuna.get_all_study_names(rdb) if n.startswith(prefix)]
    if families is not None:
        names = [n for n in names if n.removeprefix(prefix) in families]
    rows = []
    for name in sorted(names):
        study = optuna.load_study(study_name=name, storage=rdb)
        family = name.removeprefix(prefix)
        rows += [_trial_row(family, t, study.user_attrs) for t in study.get_trials(deepcopy=False)]
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    if table.empty:
        return table
    order = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}
    table["_order"] = table["state"].map(order)
    table = table.sort_values(["family", "_order", "score", "trial"], na_position="last")
    return table.drop(columns="_order").reset_index(drop=True)
