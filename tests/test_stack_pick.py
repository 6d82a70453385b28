"""kit stack's per-keypoint pick: the best single base model, as it stands, is a candidate
beside the meta-learners, so the stack's CV is not worse than the best single model's."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
from rich.console import Console
from test_stack import FKD, TWO, arrays_data, base, truth_arrays

from kit.cli.tables import stack_frame, stack_summary, stack_table
from kit.metrics import RMSE
from kit.stack import LIGHTGBM, PICKED, RIDGE, BaseModel, StackOutcome, stack_predictions
from kit.stack.picking import PICK_FROM, best_base, pick_candidates, row_losses, single_label

KEPT_BASES: list[BaseModel] = []  # the fixture's base models, in the stack's order


@pytest.fixture(scope="module")
def kept() -> tuple[StackOutcome, BaseModel]:
    """One accurate base model and three noisy ones. The accurate model's bias drifts from fold
    to fold (+1, -1, 0 px), which no meta-learner fitted on the other folds can learn: each
    "corrects" a bias the scored fold does not have."""
    truth, test_truth = truth_arrays(120, 8, seed=12)
    rng = np.random.default_rng(13)
    folds = np.arange(120) % 3
    drift = np.array([1.0, -1.0, 0.0])[folds][:, None, None]
    good = base("good", truth + drift + rng.normal(0, 0.1, truth.shape), test_truth + 0.5)
    noisy = [
        base(f"noisy{i}", truth + rng.normal(0, 4.0, truth.shape), test_truth + 9.0)
        for i in range(3)
    ]
    data, images = arrays_data(truth), np.zeros((8, 8, 8))
    KEPT_BASES[:] = [*noisy, good]
    return stack_predictions(FKD, data, images, folds, KEPT_BASES), good


def test_the_stack_keeps_the_best_single_model_where_the_meta_learners_lose(kept) -> None:
    """Nested CV keeps the accurate model as it stands, so the stack's CV is not worse than
    the best single model's."""
    out, good = kept
    assert out.best_single == "good"
    single = single_label("good")
    assert out.picks == {"left_eye_center": single, "nose_tip": single}
    assert all(set(p.values()) == {single} for p in out.picks_per_fold.values())
    # The picked predictions are the base model's, unchanged, out of fold and on test.
    cols = list(TWO)
    np.testing.assert_array_equal(out.picked_oof[:, cols], good.oof[:, cols])
    np.testing.assert_array_equal(out.picked_test[:, cols], good.test[:, cols])
    best, picked = out.scores["good"]["overall"], out.scores[PICKED]["overall"]
    assert picked <= best + 1e-9
    # The meta-learners clearly lose here: without the best single model the stack would too.
    assert min(out.scores[RIDGE]["overall"], out.scores[LIGHTGBM]["overall"]) > 1.3 * best
    # The fitted stack that kit predict loads gives the same picked test predictions.
    tests = [b.test for b in KEPT_BASES]
    predicted = out.fitted.predict(tests, np.zeros((8, 8, 8)))
    np.testing.assert_array_equal(predicted[:, cols], out.picked_test[:, cols])
    table = out.table.set_index("method")
    assert table.at[single, "kind"] == "best single"
    assert table.at[PICKED, "overall"] <= table.at[single, "overall"] + 1e-9


def test_the_best_single_model_follows_the_metrics_direction() -> None:
    """best_base ranks by the Metric's own direction, and the best single model is no
    candidate for a keypoint it does not predict."""
    truth, _ = truth_arrays(60, 1, seed=14)
    rng = np.random.default_rng(15)
    close = base("close", truth + rng.normal(0, 0.5, truth.shape), truth[:1])
    far = base("far", truth + rng.normal(0, 3.0, truth.shape), truth[:1])
    data, rows = arrays_data(truth), np.arange(60)
    losses = {b.name: row_losses(FKD, data, b.oof) for b in (close, far)}
    assert best_base(RMSE, [far, close], list(TWO), losses, rows).name == "close"
    upside_down = dataclasses.replace(RMSE, greater_is_better=True)
    assert best_base(upside_down, [far, close], list(TWO), losses, rows).name == "far"
    eye_only = base("eye", truth, truth[:1], keypoints=(0,))
    losses["eye"] = row_losses(FKD, data, eye_only.oof)
    losses |= {m: losses["far"] for m in PICK_FROM}
    candidates = pick_candidates(eye_only, losses)
    assert list(candidates) == [single_label("eye"), *PICK_FROM]  # the simplest first
    method, (loss, _) = candidates[single_label("eye")]
    assert method == "eye" and np.isinf(loss[:, 10]).all() and (loss[:, 0] < 1e-9).all()


def test_the_best_single_model_is_chosen_on_the_picks_rows_only() -> None:
    """For fold f's nested score the best single model is the best on the other folds: a
    model that is best on fold 0 alone is not chosen for fold 0."""
    truth, _ = truth_arrays(90, 1, seed=16)
    rng = np.random.default_rng(17)
    folds = np.arange(90) % 3
    noise = np.where((folds == 0)[:, None, None], 0.1, 2.0)
    lucky = base("lucky", truth + rng.normal(0, 1, truth.shape) * noise, truth[:1])
    steady = base("steady", truth + rng.normal(0, 1.0, truth.shape), truth[:1])
    data = arrays_data(truth)
    losses = {b.name: row_losses(FKD, data, b.oof) for b in (lucky, steady)}
    bases, covered = [lucky, steady], list(TWO)
    assert best_base(RMSE, bases, covered, losses, np.flatnonzero(folds != 0)).name == "steady"
    assert best_base(RMSE, bases, covered, losses, np.flatnonzero(folds == 0)).name == "lucky"


def test_the_stack_reports_name_the_best_single_model(kept) -> None:
    """The CLI's table shows the pick as `single`, its CSV and summary by the run's name."""
    out, _ = kept
    names = [FKD.keypoint_names[k] for k in out.keypoints]
    manifest = SimpleNamespace(
        runs=[{"run_id": n} for n in ("noisy0", "noisy1", "noisy2", "good")],
        metric=FKD.metric,
        keypoints=names,
        picks=out.picks,
        best_single=out.best_single,
        methods=out.scores,
        lightgbm_rounds={},
        fallbacks_to_blend={},
    )
    cv = out.scores[PICKED]["overall"]
    result = SimpleNamespace(
        manifest=manifest, table=out.table, stack_id="s", cv_score=cv, path="stacks/s"
    )
    assert list(stack_frame(result)["picked"][1:]) == [single_label("good")] * 2
    term = Console(width=200, record=True, highlight=False)
    term.print(stack_table(result))
    rows = [line.split() for line in term.export_text().splitlines()]
    assert [row[-1] for row in rows if row and row[0] in ("L.eye.c", "nose.tip")] == ["single"] * 2
    assert "picked per keypoint: best single (good) 2" in stack_summary(result)
