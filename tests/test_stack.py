"""kit stack: the meta-learners on OOF arrays of known structure, nested-CV honesty, missing
coordinates, keypoint-subset runs, and the run -> stack -> artifacts path with the CLI."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import kit.console
import kit.stack.boosting
import kit.training.runs
from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData
from kit.data.folds import write_folds
from kit.errors import KitError
from kit.fetch import fetch
from kit.metrics import evaluate
from kit.stack import (
    BLEND,
    LIGHTGBM,
    PICKED,
    RIDGE,
    BaseModel,
    MetaLeakError,
    StackSettings,
    check_meta_rows,
    fit_ridge,
    list_stacks,
    stack,
    stack_coordinate,
    stack_predictions,
)
from kit.training.runs import train_run

REPO = Path(__file__).resolve().parents[1]
TINY_NAME = "tiny-fkd"
TINY_SIZE = 32
# sp shrunk to a few thousand weights: a 1-epoch run of 3 folds takes about a second.
TINY_SP = {"hidden": 16, "batch_size": 16, "patience": 0}


# ------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny runs on one intra-op thread: on a shared, oversubscribed 2-core box two threads
    wait on each other at every small op (measured: 0.3 s against 11 s for a tiny run)."""
    monkeypatch.setattr(kit.training.runs, "configure_cpu_threads", one_thread)


def one_thread() -> int:
    torch.set_num_threads(1)
    return 1


def tiny_competition(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    n_train: int = 60,
    n_test: int = 9,
    folds: int | None = 3,
) -> Competition:
    """facial-keypoints at 32 px as a competition folder of its own (found by name, so the CLI
    works), with write_example's raw files fetched and `folds` folds written (None: none, for
    a test that edits the labels first)."""
    folder = root / "competitions" / TINY_NAME
    shutil.copytree(REPO / "competitions" / "facial-keypoints", folder)
    toml = folder / "competition.toml"
    text = toml.read_text().replace('name = "facial-keypoints"', f'name = "{TINY_NAME}"')
    toml.write_text(text.replace("input_size = 96", f"input_size = {TINY_SIZE}"))
    monkeypatch.setenv("KIT_COMPETITIONS", str(folder.parent))
    comp = load_competition(TINY_NAME)
    source = comp.plugin.write_example(root / "source", comp, n_train, n_test, seed=1)
    fetch(comp, source)
    if folds is not None:
        write_folds(comp, k=folds)
    return comp


def tiny_run(comp: Competition, **kwargs) -> kit.training.runs.RunResult:
    overrides = {**TINY_SP, **kwargs.pop("overrides", {})}
    return train_run(comp, "sp", overrides, epochs=1, pictures=False, device="cpu", **kwargs)


def arrays_data(truth: np.ndarray) -> KeypointData:
    """KeypointData of (N, K, 2) truth with blank 8x8 images (the stack reads no pixels here)."""
    n = len(truth)
    images = np.zeros((n, 8, 8), np.uint8)
    return KeypointData.whole_images(images, truth.astype(np.float32), np.arange(n))


FKD = load_competition("facial-keypoints")
TWO = (0, 10)  # left_eye_center, nose_tip: bases predict only these, so the tests stay quick


def base(name: str, oof: np.ndarray, test: np.ndarray, keypoints=TWO) -> BaseModel:
    oof_full = np.full((len(oof), FKD.num_keypoints, 2), np.nan)
    test_full = np.full((len(test), FKD.num_keypoints, 2), np.nan)
    oof_full[:, list(keypoints)] = oof[:, list(keypoints)]
    test_full[:, list(keypoints)] = test[:, list(keypoints)]
    return BaseModel(name, tuple(keypoints), oof_full, test_full)


def truth_arrays(n: int, m: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(20, 76, (n, FKD.num_keypoints, 2)), rng.uniform(20, 76, (m, 15, 2))


def rmse_of(outcome, method: str, truth: np.ndarray, keypoints=TWO) -> float:
    pred = outcome.oof[method][:, list(keypoints)]
    return float(np.sqrt(np.mean((pred - truth[:, list(keypoints)]) ** 2)))


# ------------------------------------------------------------------------- the meta-learners


def test_ridge_removes_a_constant_bias_the_blend_keeps() -> None:
    truth, test_truth = truth_arrays(240, 20)
    rng = np.random.default_rng(1)
    biased = base(
        "biased",
        truth + 3.0 + rng.normal(0, 0.3, truth.shape),
        test_truth + 3.0 + rng.normal(0, 0.3, test_truth.shape),
    )
    folds = np.arange(240) % 4
    out = stack_predictions(FKD, arrays_data(truth), np.zeros((20, 8, 8)), folds, [biased])
    assert rmse_of(out, BLEND, truth) == pytest.approx(3.0, abs=0.05)
    assert rmse_of(out, RIDGE, truth) < 0.4  # the intercept takes the 3 px off
    assert rmse_of(out, LIGHTGBM, truth) < 0.4
    test_error = out.test[RIDGE][:, list(TWO)] - test_truth[:, list(TWO)]
    assert np.sqrt(np.mean(test_error**2)) < 0.4  # the test predictions are corrected too
    assert set(out.picks.values()) <= {RIDGE, LIGHTGBM}


def test_stack_of_two_complementary_models_beats_each_and_the_blend() -> None:
    """Model a is precise on the image's left half and noisy on the right; b the opposite.
    A weighting that depends on where the point is (trees) beats any fixed weighting. The
    trees need the models' differences ("diffs") to weight them, and for y they need x, the
    other coordinates' predictions ("coords")."""
    truth, test_truth = truth_arrays(400, 30, seed=2)
    rng = np.random.default_rng(3)

    def model(points: np.ndarray, good_left: bool) -> np.ndarray:
        scale = np.where((points[..., :1] < 48) == good_left, 0.3, 3.0)
        return points + rng.normal(0, 1, points.shape) * scale

    a = base("a", model(truth, True), model(test_truth, True))
    b = base("b", model(truth, False), model(test_truth, False))
    folds = np.arange(400) % 5
    features = StackSettings(frozenset({"coords", "diffs"}))
    out = stack_predictions(FKD, arrays_data(truth), np.zeros((30, 8, 8)), folds, [a, b], features)
    best_single = min(rmse_of(out, "a", truth), rmse_of(out, "b", truth))
    assert best_single > 1.5
    assert rmse_of(out, BLEND, truth) < 0.8 * best_single
    assert rmse_of(out, LIGHTGBM, truth) < 0.5 * best_single
    assert rmse_of(out, LIGHTGBM, truth) < 0.6 * rmse_of(out, RIDGE, truth)
    assert out.picks == {"left_eye_center": LIGHTGBM, "nose_tip": LIGHTGBM}
    # The table holds the same scores the arrays give.
    table = out.table.set_index("method")
    assert table.at[LIGHTGBM, "overall"] == pytest.approx(rmse_of(out, LIGHTGBM, truth))
    assert table.at["best single (b)", "overall"] == pytest.approx(best_single)
    assert table.at[PICKED, "overall"] <= table.at[RIDGE, "overall"]


def test_ridge_weights_follow_the_better_model() -> None:
    rng = np.random.default_rng(4)
    y = rng.uniform(20, 70, 300)
    good, bad = y + rng.normal(0, 0.5, 300), y + rng.normal(0, 4.0, 300)
    x = np.stack([good, bad], axis=1)
    fit = fit_ridge(x, y, x.mean(axis=1), np.ones(300))
    weights = fit.weights()
    assert weights[0] > 0.85 and abs(weights[1]) < 0.15
    pred = fit.predict(x, x.mean(axis=1))
    assert np.sqrt(np.mean((pred - y) ** 2)) < 0.55


# ------------------------------------------------------------------------- nested-CV honesty


def test_a_folds_meta_oof_does_not_depend_on_that_folds_labels() -> None:
    rng = np.random.default_rng(5)
    n = 200
    y = rng.uniform(20, 70, n)
    x = np.stack([y + rng.normal(1, 1, n), y + rng.normal(-1, 2, n)], axis=1)
    folds = np.arange(n) % 4
    x_test = x[:10]
    settings = StackSettings()
    first = stack_coordinate(
        x, x, y, np.ones(n), folds, x_test, x_test, metric="rmse", settings=settings
    )
    changed = y.copy()
    changed[folds == 0] += rng.normal(0, 10, (folds == 0).sum())  # fold 0's labels only
    second = stack_coordinate(
        x, x, changed, np.ones(n), folds, x_test, x_test, metric="rmse", settings=settings
    )
    for method in (RIDGE, LIGHTGBM):
        np.testing.assert_array_equal(first.oof[method][folds == 0], second.oof[method][folds == 0])
        assert not np.allclose(first.oof[method][folds == 1], second.oof[method][folds == 1])


def test_leak_check_rejects_training_on_the_scored_fold() -> None:
    folds = np.array([0, 1, 2, 0, 1, 2])
    check_meta_rows(folds, 0, np.array([1, 2, 4, 5]), np.array([0, 3]))  # honest: no error
    with pytest.raises(MetaLeakError, match="fold 0 would train on row 3"):
        check_meta_rows(folds, 0, np.array([1, 2, 3]), np.array([0, 3]))
    with pytest.raises(MetaLeakError, match="would predict row 1 of fold 1"):
        check_meta_rows(folds, 0, np.array([2, 5]), np.array([0, 1]))


def test_stack_asserts_honesty_when_the_fold_split_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    def leaky(folds, fold, usable):  # a broken split that trains on every usable row
        return np.flatnonzero(usable), np.flatnonzero(folds == fold)

    monkeypatch.setattr(kit.stack.boosting, "fold_rows", leaky)
    truth, test_truth = truth_arrays(60, 5)
    model = base("m", truth + 1, test_truth + 1)
    with pytest.raises(MetaLeakError, match="stack leak"):
        stack_predictions(FKD, arrays_data(truth), np.zeros((5, 8, 8)), np.arange(60) % 3, [model])


# ------------------------------------------------------------------------- missing labels, subsets


def test_a_missing_coordinate_is_left_out_of_that_coordinates_meta_model_only() -> None:
    truth, test_truth = truth_arrays(180, 10, seed=6)
    truth[::2, 10] = np.nan  # nose_tip missing in half the rows; left_eye_center always there
    model = base("m", np.nan_to_num(truth, nan=48.0) + 1.0, test_truth + 1.0)
    folds = np.arange(180) % 3
    data = arrays_data(truth)
    results = {}
    for k in TWO:
        columns = model.oof[:, None, k, 0]
        results[k] = stack_coordinate(
            columns, columns, truth[:, k, 0], np.ones(180), folds,
            model.test[:, None, k, 0], model.test[:, None, k, 0],
            metric="rmse", settings=StackSettings(),
        )  # fmt: skip
    labelled = np.isfinite(truth[:, 10, 0])
    assert results[0].train_rows == [120, 120, 120]  # every other-fold row
    assert results[10].train_rows == [int((labelled & (folds != f)).sum()) for f in range(3)]
    assert np.isfinite(results[10].oof[RIDGE]).all()  # unlabelled rows still get a prediction
    # The whole stack scores only labelled coordinates, and still corrects the +1 bias.
    out = stack_predictions(FKD, data, np.zeros((10, 8, 8)), folds, [model])
    assert out.scores[RIDGE]["coordinates"] == int(np.isfinite(truth[:, list(TWO)]).sum())
    assert out.scores[RIDGE]["per_keypoint"]["nose_tip"] < 0.2
    assert out.scores["m"]["per_keypoint"]["nose_tip"] == pytest.approx(1.0, abs=1e-6)


def test_a_subset_model_feeds_only_its_keypoints() -> None:
    truth, test_truth = truth_arrays(120, 6, seed=7)
    rng = np.random.default_rng(8)
    full = base("full", truth + rng.normal(0, 1, truth.shape), test_truth, keypoints=TWO)
    eight = base("eight", truth + rng.normal(0, 1, truth.shape), test_truth, keypoints=(0,))
    out = stack_predictions(
        FKD, arrays_data(truth), np.zeros((6, 8, 8)), np.arange(120) % 3, [full, eight]
    )
    assert out.keypoints == list(TWO)
    assert [len(w) for w in out.ridge_weights["left_eye_center"][0]] == [2, 2, 2]
    assert [len(w) for w in out.ridge_weights["nose_tip"][0]] == [1, 1, 1]
    # The blend of nose_tip is the full model alone; the eye's is the mean of both.
    np.testing.assert_allclose(out.oof[BLEND][:, 10], full.oof[:, 10])
    np.testing.assert_allclose(out.oof[BLEND][:, 0], (full.oof[:, 0] + eight.oof[:, 0]) / 2)
    table = out.table.set_index("method")
    assert table.at["eight", "keypoints"] == 1 and np.isnan(table.at["eight", "nose_tip"])
    assert table.loc["best single (full)", "keypoints"] == 2  # the best that covers both


def test_ibug_stack_scores_mae_in_original_pixels() -> None:
    """ibug-68: fits weigh rows by their crop's scale and scores are MAE (and NME) in the
    original image's pixels."""
    comp = load_competition("ibug-68")
    n, m, eyes = 150, 6, (36, 45)  # the outer eye corners, NME's normaliser
    rng = np.random.default_rng(11)
    truth = np.full((n, 68, 2), np.nan)
    truth[:, eyes] = rng.uniform(20, 100, (n, 2, 2))
    scale = np.where(np.arange(n) % 2 == 0, 1.0, 3.0)  # original px per input px
    to_original = np.zeros((n, 2, 3), np.float32)
    to_original[:, 0, 0] = to_original[:, 1, 1] = scale
    to_original[:, :, 2] = 10.0
    ids = np.arange(n).astype(str)
    images = np.zeros((n, 8, 8), np.uint8)
    data = KeypointData(images, truth.astype(np.float32), ids, ids, to_original)
    oof, test = truth + 1.0, np.full((m, 68, 2), 50.0)  # 1 input px too far right and down
    model = BaseModel("b", eyes, oof, test)
    out = stack_predictions(comp, data, np.zeros((m, 8, 8)), np.arange(n) % 3, [model])
    assert out.scores["b"]["overall"] == pytest.approx(scale.mean())  # 1 px x the crop scale
    assert out.scores["b"]["nme"] > 0
    assert out.scores[RIDGE]["overall"] < 0.05 and out.scores[RIDGE]["nme"] < 0.1
    assert out.test[RIDGE][:, eyes] == pytest.approx(np.full((m, 2, 2), 49.0), abs=0.05)


def test_unknown_feature_set_and_no_bases_are_clear_errors() -> None:
    truth, test_truth = truth_arrays(30, 3)
    model = base("m", truth, test_truth)
    data, folds = arrays_data(truth), np.arange(30) % 3
    with pytest.raises(KitError, match="unknown stack feature set pixels"):
        stack_predictions(FKD, data, np.zeros((3, 8, 8)), folds, [model], StackSettings({"pixels"}))
    with pytest.raises(KitError, match="nothing to stack"):
        stack_predictions(FKD, data, np.zeros((3, 8, 8)), folds, [])


def test_extra_features_feed_lightgbm() -> None:
    """With "image" the trees see the brightness, which here decides each model's error."""
    truth, test_truth = truth_arrays(300, 10, seed=9)
    rng = np.random.default_rng(10)
    bright = rng.random(300) < 0.5
    images = np.repeat(np.where(bright, 200, 40).astype(np.uint8), 64).reshape(300, 8, 8)
    shift = np.where(bright, 1.0, -1.0)[:, None, None]  # the error's sign depends on brightness
    model = base("m", truth + shift + rng.normal(0, 0.2, truth.shape), test_truth)
    data = arrays_data(truth)
    data.images = images
    folds, test_images = np.arange(300) % 3, np.zeros((10, 8, 8), np.uint8)
    plain = stack_predictions(FKD, data, test_images, folds, [model])
    image = StackSettings(frozenset({"image"}))
    seeing = stack_predictions(FKD, data, test_images, folds, [model], image)
    assert rmse_of(seeing, LIGHTGBM, truth) < 0.8 * rmse_of(plain, LIGHTGBM, truth)


# ------------------------------------------------------------------------- runs -> stack -> files


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Competition:
    return tiny_competition(tmp_path, monkeypatch)


def test_stack_of_runs_writes_reusable_artifacts(tiny: Competition) -> None:
    first = tiny_run(tiny)
    second = tiny_run(tiny, overrides={"lr": 0.03}, seed=1)
    partial = tiny_run(tiny, overrides={"lr": 0.02}, folds=1)  # a tuning trial: fold 0 only
    result = stack(tiny, per_family=2)
    assert sorted(result.run_ids) == sorted([first.run_id, second.run_id])
    assert partial.run_id not in result.run_ids
    data = KeypointData.load(tiny.workspace.train_npz)
    assert result.oof.shape == (60, 15, 2) and result.test.shape == (9, 15, 2)
    assert np.isfinite(result.oof).all() and np.isfinite(result.test).all()
    # The manifest's CV is the score of the stored OOF.
    assert result.cv_score == pytest.approx(evaluate(tiny, result.oof, data).overall, rel=1e-5)
    for name in ("manifest.json", "table.csv", "candidates.npz"):
        assert (result.path / name).stat().st_size > 0
    table = pd.read_csv(result.path / "table.csv")
    assert list(table["method"][-3:]) == [RIDGE, LIGHTGBM, PICKED]
    assert set(result.manifest.picks) == set(tiny.keypoint_names)
    again = stack(tiny, per_family=2)
    assert again.reused and again.stack_id == result.stack_id
    assert [s.stack_id for s in list_stacks(tiny)] == [result.stack_id]


def test_runs_of_another_folds_file_are_skipped_or_refused(tiny: Competition) -> None:
    old = tiny_run(tiny)
    write_folds(tiny, k=4)  # a new folds file: the run's OOF no longer matches it
    fresh = tiny_run(tiny)
    warnings: list[str] = []
    result = stack(tiny, warn=warnings.append)
    assert result.run_ids == [fresh.run_id]
    assert warnings == [f"skipping run {old.run_id}: it was trained on another folds file"]
    with pytest.raises(KitError, match=f"cannot stack run {old.run_id}: .*another folds file"):
        stack(tiny, [old])


def test_stack_cli_prints_the_comparison(
    tiny: Competition, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kit.console.console, "width", 200)  # the table is wide
    run = tiny_run(tiny)
    result = cli("stack", TINY_NAME, "--features", "diffs,image")
    assert result.code == 0, result.err
    assert "picked" in result.out and "lgbm" in result.out and "nose.tip" in result.out
    assert "x the best single model" in result.out
    monkeypatch.setattr(kit.console.console, "width", 80)
    narrow = cli("stack", TINY_NAME, "--features", "diffs,image")  # the same stack, reused
    lines = narrow.out.splitlines()
    assert narrow.code == 0 and max(len(line) for line in lines) <= 80 and "…" not in narrow.out
    assert "nose.tip nose_tip" in " ".join(narrow.out.split())  # the legend
    as_csv = cli("stack", TINY_NAME, "--features", "diffs,image", "--format", "csv")
    frame = pd.read_csv(io.StringIO(as_csv.out))
    assert as_csv.code == 0 and "reusing" in as_csv.err  # stdout: the data alone
    assert frame["keypoint"].tolist() == ["overall", *tiny.keypoint_names]
    assert run.run_id in frame.columns and frame["picked"].iloc[1] in (RIDGE, LIGHTGBM)
    as_json = json.loads(
        cli("stack", TINY_NAME, "--features", "diffs,image", "--format", "json").out
    )
    assert as_json["runs"] == [run.run_id] and len(as_json["rows"]) == 16
    stacked = list_stacks(tiny)[0]
    assert stacked.manifest.features == ["diffs", "image"]
    assert stacked.run_ids == [run.run_id]
    bad = cli("stack", TINY_NAME, "--features", "pixels")
    assert bad.code == 1 and "--features: unknown pixels" in bad.err
    missing = cli("stack", TINY_NAME, "--runs", "sp-000")
    assert missing.code == 1 and "no finished run 'sp-000'" in missing.err
