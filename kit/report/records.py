"""What `kit report` shows, read from one work folder into typed records before anything is
drawn: the runs and stacks through their own readers (kit.training.runs, kit.stack), the last
`kit run`'s plan.json, the Optuna studies, and the submission manifests joined with the public
scores `kit track` recorded. Reading apart from drawing keeps each testable alone."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from kit.competition import Competition
from kit.errors import DataError, KitError
from kit.stack import StackResult, list_stacks
from kit.store import RunResult, list_runs
from kit.store.files import read_json
from kit.store.manifests import SubmissionManifest
from kit.workspace import submissions_dir

PLAN_FILE = "plan.json"
TUNE_FILE = "tune.sqlite3"
MIN_IMPORTANCE_TRIALS = 4  # fewer complete trials say nothing about which parameter matters


# ------------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class PlanRow:
    """One planned run (or the search) of plan.json: the estimate, and what it took."""

    name: str
    family: str
    config: str
    epochs: int
    seed: int
    estimated_seconds: float
    actual_seconds: float | None  # None: not in the outcome (the run never started)
    cv: float | None
    run_id: str | None
    note: str


@dataclass(frozen=True)
class PlanRecord:
    """The last `kit run`'s plan.json: its budget, planned runs and their outcome."""

    path: Path
    written: datetime
    budget: float
    folds: int
    seconds_for_runs: float
    stack_seconds: float
    estimated_seconds: float
    rows: tuple[PlanRow, ...]
    search: dict[str, Any] | None
    skipped: tuple[tuple[str, str], ...]

    @property
    def trained(self) -> tuple[PlanRow, ...]:
        return tuple(r for r in self.rows if r.run_id)

    @property
    def actual_seconds(self) -> float:
        return sum(r.actual_seconds or 0.0 for r in self.rows)


@dataclass(frozen=True)
class TrialPoint:
    """One Optuna trial: its fold-0 score (None unless complete) and when it finished."""

    number: int
    state: str
    value: float | None
    finished: datetime | None


@dataclass(frozen=True)
class StudyRecord:
    """A family's study: its trials, and the parameters' importance where Optuna can tell."""

    family: str
    trials: tuple[TrialPoint, ...]
    importances: dict[str, float]  # param -> share (sums to 1); empty with a note
    importance_note: str = ""

    @property
    def complete(self) -> tuple[TrialPoint, ...]:
        return tuple(t for t in self.trials if t.state == "COMPLETE" and t.value is not None)


@dataclass(frozen=True)
class TuningRecord:
    """The competition's studies and kit's trials table (kit.tuning.tuning_table)."""

    studies: tuple[StudyRecord, ...]
    table: pd.DataFrame = field(compare=False)


@dataclass(frozen=True)
class SubmissionRecord:
    """A kept submission: where it came from, its CV, and its public score when tracked."""

    file: str
    manifest: str
    created: str
    source: str  # "stack stack-1a2b" or "run sp-..."
    cv: float
    message: str
    dry_run: bool
    kaggle_ref: int | None
    upload_error: str | None
    status: str  # Kaggle's status when tracked ("COMPLETE", "ERROR"), else ""
    public: float | None
    private: float | None
    upload_skipped: str | None = None  # why it is never uploaded (no Kaggle page)


@dataclass(frozen=True)
class WorkFolder:
    """Everything the report shows about one competition's work folder."""

    competition: str
    metric: str
    root: Path
    keypoints: tuple[str, ...]
    runs: tuple[RunResult, ...]  # complete runs first, each part best CV first
    stacks: tuple[StackResult, ...]  # best CV first
    plan: PlanRecord | None
    tuning: TuningRecord | None
    submissions: tuple[SubmissionRecord, ...]  # newest first
    tracked: bool  # a track.sqlite3 with at least one snapshot
    on_kaggle: bool = True  # False: no Kaggle page, so no public scores to track
    notes: tuple[str, ...] = ()  # what could not be read (the rest of the page still shows)

    @property
    def complete_runs(self) -> tuple[RunResult, ...]:
        return tuple(r for r in self.runs if is_complete(r))

    @property
    def empty(self) -> bool:
        return not (self.runs or self.stacks or self.plan or self.tuning or self.submissions)


# ------------------------------------------------------------------------------------ reading


def read_work_folder(comp: Competition) -> WorkFolder:
    """Every record of `comp`'s work folder; a clear error when there is nothing to report."""
    root = comp.workspace.root
    if not root.is_dir():
        raise KitError(
            f"no work folder for {comp.name}", path=root, hint=f"run `kit run {comp.name}` first"
        )
    notes: list[str] = []
    public = read_public_scores(root)
    folder = WorkFolder(
        competition=comp.name,
        metric=comp.metric,
        root=root,
        keypoints=tuple(comp.keypoint_names),
        runs=tuple(sorted(list_runs(comp), key=lambda r: not is_complete(r))),  # stable: CV order
        stacks=tuple(list_stacks(comp)),
        plan=read_plan(root / PLAN_FILE),
        tuning=read_tuning(comp, notes),
        submissions=read_submissions(submissions_dir(comp.name), public, notes),
        tracked=public is not None,
        on_kaggle=comp.on_kaggle,
        notes=tuple(notes),
    )
    if folder.empty:
        raise KitError(
            f"nothing to report for {comp.name}: no runs, stacks, plan, tuning studies or "
            "submissions",
            path=root,
            hint=f"run `kit run {comp.name}` (or kit train, kit tune) first",
        )
    return folder


def is_complete(run: RunResult) -> bool:
    """Trained on every fold (a tuning trial trains fold 0 only)."""
    return bool(run.manifest.folds.get("complete", True))


def read_plan(path: Path) -> PlanRecord | None:
    """plan.json as `kit.planning.stage.save_plan` writes it; None when there is none."""
    if not path.is_file():
        return None
    try:
        data = read_json(path)
        outcome = {row["name"]: row for row in data.get("outcome", [])}
        planned = [*data.get("runs", []), *[r for r in data.get("outcome", []) if _extra(r, data)]]
        rows = tuple(_plan_row(run, outcome.get(run["name"])) for run in planned)
        return PlanRecord(
            path=path,
            written=datetime.fromtimestamp(path.stat().st_mtime, UTC),
            budget=float(data.get("budget", 0.0)),
            folds=int(data["folds"]),
            seconds_for_runs=float(data.get("seconds_for_runs", 0.0)),
            stack_seconds=float(data.get("stack_seconds", 0.0)),
            estimated_seconds=float(data.get("estimated_seconds", 0.0)),
            rows=rows,
            search=data.get("search"),
            skipped=tuple((s["name"], s["why"]) for s in data.get("skipped", [])),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"not a kit run plan ({exc!r})", path=path, hint="rerun `kit run` to write it again"
        ) from exc


def _extra(row: dict[str, Any], data: dict[str, Any]) -> bool:
    """An outcome row that was not a planned run: the search's winner, a student."""
    return row["name"] not in {r["name"] for r in data.get("runs", [])}


def _plan_row(run: dict[str, Any], done: dict[str, Any] | None) -> PlanRow:
    row = done if done is not None else run
    overrides = row.get("overrides") or {}
    return PlanRow(
        name=str(run["name"]),
        family=str(run.get("family", "")),
        config=", ".join(f"{k}={v}" for k, v in overrides.items()) or "defaults",
        epochs=int(row["epochs"]),
        seed=int(row.get("seed", 0)),
        estimated_seconds=float(run.get("estimated_seconds", 0.0)),
        actual_seconds=None if done is None else float(done.get("actual_seconds") or 0.0),
        cv=None if done is None or done.get("cv") is None else float(done["cv"]),
        run_id=None if done is None else done.get("run_id"),
        note=str((done or {}).get("note", "")) or ("" if done else "not in the outcome"),
    )


def read_tuning(comp: Competition, notes: list[str]) -> TuningRecord | None:
    """The competition's Optuna studies (tune.sqlite3); None when it was never tuned."""
    if not (comp.workspace.root / TUNE_FILE).is_file():
        return None
    import optuna

    from kit.tuning import default_storage, open_storage
    from kit.tuning.studies import quiet_optuna
    from kit.tuning.table import table_from_storage

    rdb = open_storage(default_storage(comp))
    studies = []
    with quiet_optuna():
        for name in sorted(optuna.get_all_study_names(rdb)):
            if name.startswith(f"{comp.name}/"):
                study = optuna.load_study(study_name=name, storage=rdb)
                studies.append(study_record(name.removeprefix(f"{comp.name}/"), study))
    if not studies:
        notes.append(f"{TUNE_FILE} holds no study of {comp.name}")
        return None
    return TuningRecord(tuple(studies), table_from_storage(comp, rdb, None))


def study_record(family: str, study: Any) -> StudyRecord:
    """A study's trials and, with enough complete ones, Optuna's parameter importances."""
    trials = tuple(
        TrialPoint(
            number=t.number,
            state=t.state.name,
            value=float(t.value) if t.value is not None and math.isfinite(t.value) else None,
            finished=t.datetime_complete,
        )
        for t in study.get_trials(deepcopy=False)
    )
    importances, note = param_importances(study, trials)
    return StudyRecord(family, trials, importances, note)


def param_importances(study: Any, trials: tuple[TrialPoint, ...]) -> tuple[dict[str, float], str]:
    """(param -> importance, "") where Optuna can tell; else ({}, why not)."""
    import optuna

    complete = sum(t.state == "COMPLETE" and t.value is not None for t in trials)
    if complete < MIN_IMPORTANCE_TRIALS:
        return {}, (
            f"{complete} complete trial(s): too few for parameter importance "
            f"(at least {MIN_IMPORTANCE_TRIALS})"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(study)
    except (ImportError, RuntimeError, ValueError, ZeroDivisionError) as exc:
        return {}, f"Optuna could not rank the parameters: {exc}"
    if not found:
        return {}, "no parameter was searched (every trial had the same settings)"
    return {str(k): float(v) for k, v in found.items()}, ""


def read_public_scores(root: Path) -> pd.DataFrame | None:
    """Your submissions on Kaggle as of the latest `kit track` snapshot (ref, file_name,
    status, public_value, private_value); None when the competition was never tracked."""
    from kit.track.store import DB_NAME, TrackStore

    if not (root / DB_NAME).is_file():
        return None
    with TrackStore(root / DB_NAME) as store:
        latest, _ = store.latest_ids()
        return None if latest is None else store.submissions(latest)


def read_submissions(
    folder: Path, public: pd.DataFrame | None, notes: list[str]
) -> tuple[SubmissionRecord, ...]:
    """Every submission manifest in `folder`, newest first, joined with its public score (by
    Kaggle ref, else by file name); an unreadable manifest is noted and skipped."""
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            manifest = SubmissionManifest.load(path)
        except DataError as exc:
            notes.append(f"skipped an unreadable submission manifest: {exc}")
            continue
        scored = _scored(public, manifest)
        records.append(
            SubmissionRecord(
                file=Path(manifest.file).name,
                manifest=path.name,
                created=manifest.created,
                source=f"{manifest.source.get('kind', '?')} {manifest.source.get('id', '?')}",
                cv=float(manifest.cv_score),
                message=manifest.message,
                dry_run=manifest.dry_run,
                kaggle_ref=manifest.kaggle_ref,
                upload_error=manifest.upload_error,
                status=str(scored["status"]) if scored is not None else "",
                public=finite_number(scored["public_value"]) if scored is not None else None,
                private=finite_number(scored["private_value"]) if scored is not None else None,
                upload_skipped=manifest.upload_skipped,
            )
        )
    return tuple(sorted(records, key=lambda r: (r.created, r.file), reverse=True))


def _scored(public: pd.DataFrame | None, manifest: SubmissionManifest) -> pd.Series | None:
    if public is None or public.empty:
        return None
    hit = public[public["ref"] == manifest.kaggle_ref] if manifest.kaggle_ref else public.iloc[:0]
    if hit.empty:
        hit = public[public["file_name"].map(lambda f: Path(str(f)).name) == manifest.file]
    return hit.iloc[0] if len(hit) else None


def finite_number(value: Any) -> float | None:
    """A table value as a float; None for what is missing, not a number, NaN or infinite."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None
