"""kit pseudo: a teacher's labels where the truth is missing (normal and strict sets), and
students trained on them (weights, true-label validation, content addressing, refusals)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_stack import (  # noqa: F401  (one_torch_thread is an autouse fixture)
    TINY_NAME,
    one_thread,
    one_torch_thread,
    tiny_competition,
    tiny_run,
)

import kit.pseudo.make
from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData
from kit.data.folds import write_folds
from kit.errors import DataError, KitError
from kit.metrics import evaluate
from kit.pseudo import list_pseudo, load_pseudo, make_pseudo_labels
from kit.stack import stack
from kit.store.manifests import RunManifest
from kit.store.pseudo import LABELS, NONE, PSEUDO, TRUE
from kit.training.checkpoint import load_fold_model
from kit.training.predict import predict_rows
from kit.training.targets import TargetPlan, plan_targets, pseudo_targets

N_TRAIN, N_TEST, K_FOLDS = 60, 9, 3


@pytest.fixture(autouse=True)
def one_thread_for_strict_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit.pseudo.make, "configure_cpu_threads", one_thread)


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Competition:
    return tiny_competition(tmp_path, monkeypatch, n_train=N_TRAIN, n_test=N_TEST)


def arrays(comp: Competition) -> tuple[KeypointData, KeypointData, np.ndarray]:
    from kit.data.folds import load_folds

    data = KeypointData.load(comp.workspace.train_npz)
    test = KeypointData.load(comp.workspace.test_npz)
    return data, test, np.asarray(load_folds(comp, data))


def fold_model_prediction(comp: Competition, run_path: Path, fold: int, images) -> np.ndarray:
    """What a run's fold checkpoint predicts for uint8 images (N, S, S), with flip TTA."""
    model = load_fold_model(run_path, fold)
    tensor = torch.from_numpy(images).unsqueeze(1)
    return predict_rows(model, tensor, None, torch.device("cpu"), flip_perm=comp.flip_permutation())


def student(comp: Competition, pseudo_id: str, weight: float = 0.5, **kwargs):
    overrides = {"pseudo": pseudo_id, "pseudo_weight": weight, **kwargs.pop("overrides", {})}
    return tiny_run(comp, overrides=overrides, **kwargs)


def tamper(pseudo_path: Path, rows: np.ndarray, value: float) -> None:
    """Overwrite the pseudo (not the true) labels of training `rows` with `value`."""
    with np.load(pseudo_path / LABELS) as z:
        labels = dict(z)
    pseudo = labels["source"] == PSEUDO
    picked = np.zeros_like(pseudo)
    picked[rows] = pseudo[rows]
    labels["train"][..., picked, :] = value
    np.savez(pseudo_path / LABELS, **labels)


# ------------------------------------------------------------------------- the sets


def test_a_normal_set_fills_the_missing_labels_with_the_teachers_oof(tiny: Competition) -> None:
    teacher = tiny_run(tiny)
    result = make_pseudo_labels(tiny)  # the default teacher: the only run
    data, _, _ = arrays(tiny)
    truth = data.keypoints
    present = np.isfinite(truth).all(axis=2)
    assert not present.all() and present.any()  # FKD's gaps: something to fill
    assert result.train.shape == (N_TRAIN, 15, 2) and result.test.shape == (N_TEST, 15, 2)
    np.testing.assert_array_equal(result.train[present], truth[present])  # truth is kept
    np.testing.assert_array_equal(result.train[~present], teacher.oof[~present])
    np.testing.assert_array_equal(result.test, teacher.test)
    np.testing.assert_array_equal(result.source, np.where(present, TRUE, PSEUDO))
    manifest = result.manifest
    assert manifest.teacher["id"] == teacher.run_id and not manifest.strict
    assert manifest.teacher_cv == pytest.approx(teacher.cv_score)
    assert manifest.counts == {
        "train_rows": N_TRAIN, "test_rows": N_TEST, "train_true": int(present.sum()),
        "train_pseudo": int((~present).sum()), "train_none": 0, "test_pseudo": N_TEST * 15,
        "test_none": 0,
    }  # fmt: skip
    assert "leaky" in manifest.method
    again = make_pseudo_labels(tiny, teacher.run_id[:8])
    assert again.reused and again.pseudo_id == result.pseudo_id and not result.reused
    strict = make_pseudo_labels(tiny, strict=True)
    assert strict.pseudo_id != result.pseudo_id
    assert {s.pseudo_id for s in list_pseudo(tiny)} == {result.pseudo_id, strict.pseudo_id}


def test_a_strict_set_of_fold_k_is_what_the_teachers_fold_k_model_predicts(
    tiny: Competition,
) -> None:
    teacher = tiny_run(tiny)
    result = make_pseudo_labels(tiny, teacher.run_id, strict=True)
    data, test, folds = arrays(tiny)
    present = np.isfinite(data.keypoints).all(axis=2)
    assert result.strict and result.train.shape == (K_FOLDS, N_TRAIN, 15, 2)
    assert result.test.shape == (K_FOLDS, N_TEST, 15, 2)
    for fold in range(K_FOLDS):
        train, test_labels = result.fold_labels(fold)
        model_train = fold_model_prediction(tiny, teacher.path, fold, data.images)
        model_test = fold_model_prediction(tiny, teacher.path, fold, test.images)
        np.testing.assert_allclose(train[~present], model_train[~present], atol=1e-5)
        np.testing.assert_array_equal(train[present], data.keypoints[present])
        np.testing.assert_allclose(test_labels, model_test, atol=1e-5)
        # On the fold's own rows, that model's predictions are the teacher's OOF.
        own = (folds == fold)[:, None] & ~present
        np.testing.assert_allclose(train[own], teacher.oof[own], atol=1e-4)
        # Elsewhere they are not: those OOF rows came from models that saw fold `fold`.
        other = (folds != fold)[:, None] & ~present
        assert np.abs(train[other] - teacher.oof[other]).max() > 1e-3
    assert "never saw fold k" in result.manifest.method


def test_a_stack_teaches_by_default_and_strictly_through_its_base_runs(tiny: Competition) -> None:
    first = tiny_run(tiny)
    second = tiny_run(tiny, overrides={"lr": 0.03}, seed=1)
    stacked = stack(tiny, per_family=2)
    normal = make_pseudo_labels(tiny)
    assert normal.teacher_id == stacked.stack_id  # a stack before any run
    data, test, _ = arrays(tiny)
    missing = ~np.isfinite(data.keypoints).all(axis=2)
    np.testing.assert_allclose(normal.train[missing], stacked.oof[missing], atol=1e-6)
    strict = make_pseudo_labels(tiny, strict=True)
    for fold in range(K_FOLDS):
        train, test_labels = strict.fold_labels(fold)
        mean_train = np.mean(
            [fold_model_prediction(tiny, r.path, fold, data.images) for r in (first, second)], 0
        )
        mean_test = np.mean(
            [fold_model_prediction(tiny, r.path, fold, test.images) for r in (first, second)], 0
        )
        np.testing.assert_allclose(train[missing], mean_train[missing], atol=1e-5)
        np.testing.assert_allclose(test_labels, mean_test, atol=1e-5)
    assert "meta-learner" in strict.manifest.method


def test_a_teacher_missing_keypoints_leaves_them_unlabelled(tiny: Competition) -> None:
    eight = tiny_run(tiny, keypoints="eight")
    result = make_pseudo_labels(tiny, eight.run_id)
    data, _, _ = arrays(tiny)
    present = np.isfinite(data.keypoints).all(axis=2)
    columns = np.zeros(15, bool)
    columns[eight.keypoints] = True
    expected = np.where(present, TRUE, np.where(columns, PSEUDO, NONE))
    np.testing.assert_array_equal(result.source, expected)
    assert np.isnan(result.train[expected == NONE]).all()
    assert np.isnan(result.test[:, ~columns]).all() and np.isfinite(result.test[:, columns]).all()
    assert result.manifest.counts["train_none"] == int((expected == NONE).sum()) > 0


# ------------------------------------------------------------------------- the student


@pytest.mark.parametrize("target_set", ["masked", "complete", "8-30", "impute"])
def test_a_run_manifests_plan_rebuilds_the_plan(target_set: str) -> None:
    plan = plan_targets(load_competition("facial-keypoints"), target_set)
    assert TargetPlan.from_description(plan.describe()) == plan


def test_pseudo_targets_never_replace_a_true_label_nor_touch_other_rows() -> None:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(6, 3, 2)).astype(np.float32)
    truth[[0, 2, 4], 1] = np.nan  # row 4 is a validation row
    labels = rng.normal(size=(6, 3, 2)).astype(np.float32) + 100
    labels[2, 1] = np.nan  # the teacher has nothing for row 2's keypoint 1
    test = rng.normal(size=(2, 3, 2)).astype(np.float32) + 200
    test[1] = np.nan
    train_rows = np.array([0, 1, 2, 3, 5])
    got = pseudo_targets(truth, train_rows, labels, test, 0.25)
    present = np.isfinite(truth).all(axis=2)
    np.testing.assert_array_equal(got.keypoints[:6][present], truth[present])
    np.testing.assert_array_equal(got.keypoints[0, 1], labels[0, 1])
    assert np.isnan(got.keypoints[2, 1]).all() and np.isnan(got.keypoints[4, 1]).all()
    np.testing.assert_array_equal(got.keypoints[6], test[0])
    assert np.isnan(got.keypoints[7]).all()
    expected = present.astype(np.float32)
    expected[0, 1] = 0.25
    np.testing.assert_array_equal(got.weights[:6], expected)
    np.testing.assert_array_equal(got.weights[6:], [[0.25] * 3, [0] * 3])
    assert list(got.test_rows) == [6] and got.filled == 1
    zero = pseudo_targets(truth, train_rows, labels, test, 0.0)
    np.testing.assert_array_equal(zero.keypoints[:6], truth)
    assert np.isnan(zero.keypoints[6:]).all() and len(zero.test_rows) == 0 and zero.filled == 0


def test_a_student_trains_on_pseudo_labels_and_is_scored_on_true_labels(
    tiny: Competition,
) -> None:
    teacher = tiny_run(tiny)
    pseudo = make_pseudo_labels(tiny, teacher.run_id)
    result = student(tiny, pseudo.pseudo_id, folds=1)
    data, _, folds = arrays(tiny)
    assert result.run_id != teacher.run_id
    assert result.oof.shape == (N_TRAIN, 15, 2) and result.test.shape == (N_TEST, 15, 2)
    manifest = RunManifest.load(result.path / "manifest.json")
    assert manifest.pseudo["id"] == pseudo.pseudo_id
    assert manifest.pseudo["teacher"] == teacher.run_id and manifest.config["train"]["pseudo"]
    record = json.loads((result.path / "fold-0.done.json").read_text())
    train_missing = (~np.isfinite(data.keypoints).all(axis=2))[folds != 0].sum()
    assert record["pseudo"] == {"weight": 0.5, "filled": int(train_missing), "test_rows": N_TEST}
    assert record["submodels"]["main"]["train_rows"] == (folds != 0).sum() + N_TEST
    val = np.flatnonzero(folds == 0)
    expected = evaluate(tiny, result.oof[val], data.subset(val)).overall  # true labels
    assert result.cv_score == pytest.approx(expected, rel=1e-6)

    # Wrong pseudo labels on the validation rows change nothing: they are never used.
    before = result.oof.copy()  # read now: the retrained run rewrites the same folder
    tamper(pseudo.path, val, 1e4)
    shutil.rmtree(result.path)
    same = student(tiny, pseudo.pseudo_id, folds=1)
    np.testing.assert_array_equal(same.oof, before)
    assert same.cv_score == result.cv_score
    # Wrong pseudo labels on the training rows do change what the fold learns.
    tamper(pseudo.path, np.flatnonzero(folds != 0), 0.0)  # the top-left corner
    shutil.rmtree(result.path)
    moved = student(tiny, pseudo.pseudo_id, folds=1)
    assert np.abs(moved.oof[val] - before[val]).max() > 1.0


def test_a_strict_student_takes_its_folds_labels(tiny: Competition) -> None:
    teacher = tiny_run(tiny)
    strict = make_pseudo_labels(tiny, teacher.run_id, strict=True)
    _, _, folds = arrays(tiny)
    result = student(tiny, strict.pseudo_id, folds=2)
    assert result.manifest.pseudo["strict"] is True
    before = result.oof.copy()  # read now: the retrained run rewrites the same folder
    # Fold 1's labels are its own: spoiling them moves fold 1 only, not fold 0.
    with np.load(strict.path / LABELS) as z:
        labels = dict(z)
    labels["train"][1][labels["source"] == PSEUDO] = 0.0  # the top-left corner
    np.savez(strict.path / LABELS, **labels)
    shutil.rmtree(result.path)
    spoilt = student(tiny, strict.pseudo_id, folds=2)
    zero, one = folds == 0, folds == 1
    np.testing.assert_array_equal(spoilt.oof[zero], before[zero])
    assert np.abs(spoilt.oof[one] - before[one]).max() > 1.0


def test_weight_zero_trains_exactly_as_without_pseudo_labels(tiny: Competition) -> None:
    teacher = tiny_run(tiny)
    pseudo = make_pseudo_labels(tiny, teacher.run_id)
    plain = tiny_run(tiny, overrides={"lr": 0.02}, seed=3)
    zero = student(tiny, pseudo.pseudo_id, weight=0.0, overrides={"lr": 0.02}, seed=3)
    assert zero.run_id != plain.run_id
    np.testing.assert_array_equal(zero.oof, plain.oof)
    np.testing.assert_array_equal(zero.test, plain.test)
    assert zero.cv_score == plain.cv_score
    half = student(tiny, pseudo.pseudo_id, weight=0.5, overrides={"lr": 0.02}, seed=3)
    assert not np.array_equal(half.oof, plain.oof)


# ------------------------------------------------------------------------- refusals


def test_bad_teachers_sets_and_weights_are_one_line_errors(tiny: Competition) -> None:
    with pytest.raises(KitError, match="no finished run or stack of tiny-fkd predicts every"):
        make_pseudo_labels(tiny)
    with pytest.raises(KitError, match="no finished run or stack 'sp-nope'"):
        make_pseudo_labels(tiny, "sp-nope")
    quick = tiny_run(tiny, folds=1)
    with pytest.raises(KitError, match=f"run {quick.run_id} cannot teach: it trained 1 of 3"):
        make_pseudo_labels(tiny, quick.run_id)
    teacher = tiny_run(tiny)
    pseudo = make_pseudo_labels(tiny, teacher.run_id)
    with pytest.raises(KitError, match="no pseudo-label set 'pseudo-nope' for tiny-fkd"):
        student(tiny, "pseudo-nope")
    with pytest.raises(KitError, match="setting pseudo_weight must be a number >= 0, got -1"):
        student(tiny, pseudo.pseudo_id, weight=-1.0)
    with pytest.raises(KitError, match="--target-set impute and setting pseudo"):
        student(tiny, pseudo.pseudo_id, target_set="impute")
    write_folds(tiny, k=4, force=True)  # new folds: the set and the teacher no longer match
    built = f"{pseudo.pseudo_id} was built from another folds file than tiny-fkd has now"
    with pytest.raises(DataError, match=built) as caught:
        student(tiny, pseudo.pseudo_id)
    assert "\n" not in str(caught.value) and "kit pseudo tiny-fkd" in str(caught.value)
    with pytest.raises(KitError, match="cannot teach: it was trained on another folds file"):
        make_pseudo_labels(tiny, teacher.run_id)
    data = KeypointData.load(tiny.workspace.train_npz)
    data.keypoints[0, 0, 0] += 1.0  # the cache changed since
    data.save(tiny.workspace.train_npz)
    with pytest.raises(DataError, match="built from other cached data than tiny-fkd has now"):
        student(tiny, pseudo.pseudo_id)
    assert load_pseudo(tiny, pseudo.pseudo_id).pseudo_id == pseudo.pseudo_id  # still readable


def test_pseudo_cli_writes_a_set_and_train_takes_it(tiny: Competition, cli) -> None:
    teacher = tiny_run(tiny)
    result = cli("pseudo", TINY_NAME)
    assert result.code == 0, result.err
    pseudo_id = list_pseudo(tiny)[0].pseudo_id
    assert pseudo_id in result.out and teacher.run_id in result.out
    assert f"pseudo={pseudo_id}" in result.out
    again = cli("pseudo", TINY_NAME)
    assert again.code == 0 and "reusing pseudo-label set" in again.out
    bad = cli("pseudo", TINY_NAME, "--teacher", "nope")
    assert bad.code == 1 and "no finished run or stack 'nope'" in bad.err
    assert len(bad.err.strip().splitlines()) == 1
    missing = cli("train", TINY_NAME, "sp", "--set", "pseudo=pseudo-nope", "--epochs", "1")
    assert missing.code == 1 and "no pseudo-label set 'pseudo-nope'" in missing.err
    trained = cli(
        "train", TINY_NAME, "sp", "--epochs", "1", "--folds", "1", "--set", "hidden=16",
        "--set", "batch_size=16", "--set", f"pseudo={pseudo_id}", "--set", "pseudo_weight=1",
    )  # fmt: skip
    assert trained.code == 0, trained.err
    assert f"pseudo-label set {pseudo_id} at weight 1.0" in trained.out
