"""`kit demo`: the whole pipeline on a synthetic-faces competition that kit generates itself.

No Kaggle account and no data are needed. The competition is the one whose competition.toml
says ``demo = true`` (facial-keypoints), under the name "demo" (its own work folder,
``work/demo/``, so real work is untouched), and its files are written in that competition's
exact formats by the plug-in's ``write_example`` (for FKD: drawn faces
with known keypoints, varied pose and lighting, and FKD's 8/30 missing-keypoint pattern, plus
an IdLookupTable.csv that asks all 30 values of a third of the test images and only 8 (four
keypoints) of the others). Because kit drew the test faces, it keeps their answers
(``work/demo/answers.csv``) and scores its own submission locally, as Kaggle would.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit import competition
from kit.competition import Competition
from kit.data.arrays import KeypointData
from kit.pipeline import PipelineResult, run_pipeline
from kit.progress import OnEvent, ignore
from kit.stack import PICKED
from kit.store.files import read_json
from kit.store.stacks import StackResult
from kit.workspace import write_json

DEMO_NAME = "demo"


@dataclass(frozen=True)
class DemoSettings:
    """The size of the demo. The defaults finish in about 3 minutes on 2 CPU cores."""

    budget: float = 150.0  # seconds for fetch .. submit
    n_train: int = 300
    n_test: int = 60
    input_size: int = 96
    seed: int = 0
    folds: int = 3
    # None: kit run's planner and portfolio decide, as for a user's `kit run`; a number runs
    # the older fixed-epochs search of `families` instead (quick checks and tests)
    epochs: int | None = None
    families: tuple[str, ...] = ()  # () = the portfolio's, for this device
    best_n: int = 2


def demo_competition(input_size: int = 96) -> Competition:
    """The demo-offering competition, renamed "demo" (its own work folder), at `input_size` px."""
    return dataclasses.replace(
        competition.demo_competition(), name=DEMO_NAME, input_size=input_size
    )


def source_folder(comp: Competition) -> Path:
    return comp.workspace.root / "source"


def answers_path(comp: Competition) -> Path:
    return comp.workspace.root / "answers.csv"


def prepare_demo(comp: Competition, settings: DemoSettings) -> Path:
    """Write the demo competition's raw files and its test answers (once per size and seed);
    returns the folder to fetch from."""
    folder = source_folder(comp)
    marker = folder / "demo.json"
    identity = {
        "n_train": settings.n_train,
        "n_test": settings.n_test,
        "input_size": comp.input_size,
        "seed": settings.seed,
    }
    if marker.is_file() and read_json(marker) == identity and answers_path(comp).is_file():
        return folder
    plugin = comp.plugin
    plugin.write_example(folder, comp, settings.n_train, settings.n_test, settings.seed)
    plugin.write_example_answers(
        answers_path(comp), comp, settings.n_train, settings.n_test, settings.seed
    )
    write_json(marker, identity)
    return folder


def lookup_rmse(comp: Competition, predictions: np.ndarray, test: KeypointData) -> float:
    """The competition's score of (M, K, 2) test predictions against the demo's answers."""
    return comp.plugin.score_example(
        comp, comp.workspace.raw, answers_path(comp), test, predictions
    )


def score_submission(comp: Competition, csv_path: Path) -> float:
    """The competition's score of a demo submission file against the demo's answers."""
    return comp.plugin.score_example_submission(
        comp, comp.workspace.raw, answers_path(comp), csv_path
    )


def _candidate_key(stacked: StackResult, method: str, kind: str) -> str:
    """The candidates.npz member a table row's predictions are under."""
    return stacked.manifest.best_single if kind == "best single" else method


@dataclass
class DemoResult:
    pipeline: PipelineResult
    test_score: float  # the submission file, scored locally
    table: pd.DataFrame  # method, kind, cv (nested OOF RMSE), test (local RMSE)


def score_table(comp: Competition, result: PipelineResult) -> pd.DataFrame:
    """CV and local test RMSE of every base model, the blend, the stacks and the submission."""
    stacked = result.stack
    test = KeypointData.load(comp.workspace.test_npz)
    columns = stacked.keypoints
    table = list(stacked.table.itertuples(index=False))
    keys = [_candidate_key(stacked, row.method, row.kind) for row in table]
    candidates = stacked.candidate_tests([k for k in keys if k != PICKED], len(test))
    families = {r["run_id"]: r["family"] for r in stacked.manifest.runs}
    rows = []
    for row, key in zip(table, keys, strict=True):
        pred = stacked.test if key == PICKED else candidates[key]
        full = np.full((len(test), comp.num_keypoints, 2), np.nan)
        full[:, columns] = pred
        label = f"{row.method} [{families[row.method]}]" if row.method in families else row.method
        rows.append(
            {
                "method": label,
                "kind": row.kind,
                "cv": row.overall,
                "test": lookup_rmse(comp, full, test),
            }
        )
    submission = result.submission
    rows.append(
        {
            "method": f"submission {submission.path.name}",
            "kind": "submission",
            "cv": submission.manifest.cv_score,
            "test": score_submission(comp, submission.path),
        }
    )
    return pd.DataFrame(rows)


def stack_verdict(result: PipelineResult) -> str:
    """One line: the stack against its best single model, in CV, or why it is not ahead."""
    stacked = result.stack
    best = stacked.manifest.best_single
    table = stacked.table.set_index("method")
    single = float(table.loc[table["kind"] == "best single", "overall"].iloc[0])
    ratio = stacked.cv_score / single if single else 1.0
    if len(stacked.manifest.runs) < 2:
        return f"One model fitted the budget ({best}): the stack keeps it as it stands."
    if ratio < 1 - 1e-9:
        return (
            f"The stack of {len(stacked.manifest.runs)} models beats its best single model "
            f"({best}) by {100 * (1 - ratio):.1f} % in CV ({stacked.cv_score:.4f} against "
            f"{single:.4f})."
        )
    bases = table.loc[(table["kind"] == "base") & (table.index != best), "overall"]
    worse = f"{bases.min() / single:.2f}-{bases.max() / single:.2f}x" if len(bases) else "more"
    return (
        f"The stack (CV {stacked.cv_score:.4f}) is not ahead of its best single model ({best}, "
        f"{single:.4f}): the other models err {worse} as much, too little to add; the "
        f"submission is the better of the two."
    )


def run_demo(settings: DemoSettings | None = None, on_event: OnEvent = ignore) -> DemoResult:
    """Generate (once) the demo competition, run fetch .. submit (dry run) on it, score the
    submission against the answers."""
    settings = settings or DemoSettings()
    comp = demo_competition(settings.input_size)
    source = prepare_demo(comp, settings)
    result = run_pipeline(
        comp,
        settings.budget,
        upload=False,
        source=source,
        on_event=on_event,
        families=list(settings.families) or None,
        epochs=settings.epochs,
        folds=settings.folds,
        best_n=settings.best_n,
    )
    table = score_table(comp, result)
    return DemoResult(result, float(table["test"].iloc[-1]), table)
