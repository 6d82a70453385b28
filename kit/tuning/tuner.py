"""`tune`: search every family's study, then train its best trials on all folds."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from kit.competition import Competition
from kit.errors import KitError
from kit.models import get_family, list_models
from kit.progress import Event, OnEvent, ignore
from kit.provenance import data_checksums, folds_checksum
from kit.store import RunResult
from kit.store.files import read_json
from kit.training.runs import FoldEvent, train_run
from kit.tuning.settings import BEST_FILE, DEFAULT_TRIALS, HEARTBEAT_SECONDS
from kit.tuning.studies import (
    default_storage,
    display_url,
    make_pruner,
    open_storage,
    open_study,
    study_name,
)
from kit.tuning.table import table_from_storage
from kit.tuning.trials import TuneEvent, check_trials_ran, make_objective, search
from kit.tuning.workers import run_workers, worker_environments
from kit.workspace import write_json


@dataclass
class TuneResult:
    best_runs: dict[str, list[RunResult]]  # family -> best trials trained on ALL folds
    table: pd.DataFrame  # one row per trial; see `tuning_table`
    storage: str  # the storage URL, password hidden
    studies: list[str] = field(default_factory=list)


def best_trials(study: optuna.Study, n: int) -> list[FrozenTrial]:
    """The `n` best complete trials, one per distinct config (a retried trial repeats one)."""
    complete = sorted(
        (t for t in study.get_trials(states=(TrialState.COMPLETE,)) if t.value is not None),
        key=lambda t: t.value,
    )
    chosen, seen = [], set()
    for trial in complete:
        key = repr(sorted(trial.user_attrs.get("overrides", trial.params).items()))
        if key not in seen:
            seen.add(key)
            chosen.append(trial)
    return chosen[:n]


def train_best(
    comp: Competition,
    family: str,
    study: optuna.Study,
    n: int,
    *,
    device: str | None,
    on_event: OnEvent,
    pictures: bool = True,
) -> list[RunResult]:
    """Train the `n` best trials on every fold (finished folds are reused), best first."""
    results = []
    chosen = best_trials(study, n)
    for rank, trial in enumerate(chosen, 1):
        on_event(
            TuneEvent(
                "final",
                family,
                trial.number,
                done=rank - 1,
                target=len(chosen),
                text=f"trial {trial.number} ({rank}/{len(chosen)}) on all folds",
            ).event()
        )

        def on_fold(train: Event, number: int = trial.number) -> None:
            fold: FoldEvent = train.detail
            if train.what == "fold" and fold.status != "start":
                text = f"trial {number} fold {fold.fold}/{fold.folds} {fold.status}"
                done = TuneEvent(
                    "fold", family, number, done=fold.fold, target=fold.folds, value=fold.score,
                    state=fold.status, text=text, seconds=fold.seconds,
                )  # fmt: skip
                on_event(done.event())

        overrides = trial.user_attrs.get("overrides", trial.params)
        result = train_run(
            comp, family, overrides, device=device, on_event=on_fold, pictures=pictures
        )
        study.set_user_attr(
            f"cv:{trial.number}",
            {
                "run_id": result.run_id,
                "cv": result.cv_score,
                "folds": len(result.manifest.folds["trained"]),
            },
        )
        on_event(
            TuneEvent(
                "final_end",
                family,
                trial.number,
                done=rank,
                target=len(chosen),
                value=result.cv_score,
                text=f"trial {trial.number}: CV {result.cv_score:.4f} ({result.run_id})",
            ).event()
        )
        results.append(result)
    return results


def write_best(
    comp: Competition, best: dict[str, list[RunResult]], studies: dict[str, optuna.Study]
) -> Path:
    """tune_best.json: per family, the trained-out trials (best CV first); other families kept."""
    path = comp.workspace.root / BEST_FILE
    summary = read_json(path) if path.is_file() else {}
    for family, runs in best.items():
        by_run = {t.user_attrs.get("run_id"): t for t in studies[family].get_trials(deepcopy=False)}
        entries = []
        for run in sorted(runs, key=lambda r: r.cv_score):
            trial = by_run.get(run.run_id)
            entries.append(
                {
                    "run_id": run.run_id,
                    "cv": run.cv_score,
                    "trial": trial.number if trial else None,
                    "fold0": trial.value if trial else None,
                    "overrides": trial.user_attrs.get("overrides") if trial else None,
                }
            )
        summary[family] = entries
    write_json(path, summary)
    return path


def check_families(families: Sequence[str] | None) -> list[str]:
    chosen = list(families) if families else list_models()
    for family in chosen:
        get_family(family)  # unknown name -> KitError listing the valid ones
    if len(set(chosen)) != len(chosen):
        raise KitError(f"--families lists a family twice: {','.join(chosen)}")
    return chosen


def _check_budget(
    trials: int | None, epochs: int | None, heartbeat: int, best_n: int, pruner: str
) -> None:
    for name, value in (("--trials", trials), ("--epochs", epochs), ("--heartbeat", heartbeat)):
        if value is not None and value < 1:
            raise KitError(f"{name} {value}: must be at least 1")
    if best_n < 0:
        raise KitError(f"--best {best_n}: must be 0 or more")
    make_pruner(pruner)  # validates the name


def search_here(
    comp: Competition,
    studies: dict[str, optuna.Study],
    *,
    target: int | None,
    timeout: float | None,
    epochs: int | None,
    device: str | None,
    on_event: OnEvent,
) -> None:
    """Search the studies one after another in this process; `timeout` is split over them,
    and the time one leaves unused goes to the next."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for index, (family, study) in enumerate(studies.items()):
        share = family_deadline = None
        if deadline is not None:
            share = (deadline - time.monotonic()) / (len(studies) - index)
            family_deadline = time.monotonic() + share
        objective = make_objective(
            comp, family, epochs=epochs, device=device, on_event=on_event, deadline=family_deadline
        )
        before = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        search(study, objective, family=family, target=target, timeout=share, on_event=on_event)
        check_trials_ran(study, family, before)


def tune(
    comp: Competition,
    families: list[str] | None = None,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    best_n: int = 2,
    epochs: int | None = None,
    device: str | None = None,
    on_event: OnEvent = ignore,
    seed: int = 0,
    pruner: str = "median",
    gpus: Sequence[str] | None = None,
    workers: int | None = None,
    heartbeat: int = HEARTBEAT_SECONDS,
    pictures: bool = True,
) -> TuneResult:
    """Tune each family's study to `trials` finished trials (or for `timeout` seconds, split
    over the families), then train its `best_n` best trials on all folds.

    `trials` counts finished trials of the whole study (earlier runs and other workers
    included); without `trials` and `timeout` it is 20. `epochs` fixes every trial's epochs.
    `gpus` / `workers` run the search in worker processes; `best_n=0` only searches.
    `pictures` draws the trained-out runs' curves.png and worst.png.
    """
    families = check_families(families)
    _check_budget(trials, epochs, heartbeat, best_n, pruner)
    envs = worker_environments(gpus, workers)
    data_checksums(comp)  # fail now, with a hint, if the cache or the folds file is missing
    folds_checksum(comp)
    target = trials if trials is not None or timeout is not None else DEFAULT_TRIALS
    url = storage or default_storage(comp)
    rdb = open_storage(url, heartbeat)
    fixed = {"epochs": epochs} if epochs is not None else {}
    studies = {
        f: open_study(comp, f, rdb, seed=seed, fixed=fixed, pruner=pruner, target=target)
        for f in families
    }
    if envs:
        options = {
            "--storage": url,
            "--trials": target,
            "--timeout": None if timeout is None else f"{max(1, round(timeout))}s",
            "--epochs": epochs,
            "--device": "cuda" if gpus else device,
            "--seed": seed,
            "--pruner": pruner,
            "--heartbeat": heartbeat,
        }
        run_workers(comp, families, rdb, envs, options, target=target, on_event=on_event)
    else:
        search_here(
            comp,
            studies,
            target=target,
            timeout=timeout,
            epochs=epochs,
            device=device,
            on_event=on_event,
        )
    best: dict[str, list[RunResult]] = {}
    if best_n:
        final_device = f"cuda:{gpus[0]}" if gpus else device
        for family, study in studies.items():
            best[family] = train_best(
                comp,
                family,
                study,
                best_n,
                device=final_device,
                on_event=on_event,
                pictures=pictures,
            )
        write_best(comp, best, studies)
    return TuneResult(
        best_runs=best,
        table=table_from_storage(comp, rdb, families),
        storage=display_url(url),
        studies=[study_name(comp, f) for f in families],
    )
