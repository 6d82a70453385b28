"""Metrics on hand-computed examples: RMSE, MAE in original pixels, NME, NaN handling, groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kit.competition import Competition
from kit.data.arrays import KeypointData, identity_transforms
from kit.errors import KitError
from kit.metrics import (
    MAE,
    RMSE,
    evaluate,
    get_metric,
    mae,
    metric_for,
    nme,
    nme_per_face,
    per_keypoint,
    per_row_error,
    primary,
    rmse,
)

NAN = np.nan


def test_rmse_counts_each_labelled_coordinate_once() -> None:
    truth = np.array([[[0.0, 0.0], [0.0, 0.0]]])
    pred = np.array([[[0.0, 0.0], [3.0, 4.0]]])
    assert rmse(pred, truth) == pytest.approx(np.sqrt((9 + 16) / 4))
    np.testing.assert_allclose(per_keypoint(rmse, pred, truth), [0.0, np.sqrt(12.5)])


def test_missing_truth_is_skipped_and_missing_prediction_is_an_error() -> None:
    truth = np.array([[[0.0, 0.0], [NAN, NAN]], [[1.0, 1.0], [2.0, 2.0]]])
    pred = np.array([[[1.0, 1.0], [99.0, 99.0]], [[1.0, 1.0], [2.0, 4.0]]])
    # labelled errors: 1, 1 | 0, 0, 0, 2 -> squares 1 1 0 0 0 4 over 6 coordinates
    assert rmse(pred, truth) == pytest.approx(np.sqrt(6 / 6))
    assert mae(pred, truth) == pytest.approx(4 / 6)
    np.testing.assert_allclose(per_row_error(pred, truth), [1.0, np.sqrt(4 / 4)])
    pred[1, 1, 0] = NAN
    with pytest.raises(ValueError, match="NaN"):
        rmse(pred, truth)
    assert np.isnan(rmse(pred[:1, 1:], truth[:1, 1:]))  # nothing labelled: NaN, not 0


def test_nme_divides_by_the_eye_corner_distance() -> None:
    # Eye corners 10 px apart; point errors 1 and 3 px (and 0 at the corners) -> mean 1 -> 10 %.
    truth = np.array([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0], [5.0, 9.0]]])
    pred = truth + np.array([[[0.0, 0.0], [0.0, 0.0], [0.6, 0.8], [0.0, 3.0]]])
    assert nme(pred, truth, (0, 1)) == pytest.approx(100 * (0 + 0 + 1 + 3) / 4 / 10)
    two_faces = np.concatenate([truth, 2 * truth])  # a face twice the size, same relative error
    assert nme(np.concatenate([pred, 2 * pred]), two_faces, (0, 1)) == pytest.approx(10.0)


def _ibug_like(tmp_path: Path) -> Competition:
    return Competition(
        name="tiny-ibug",
        root=tmp_path,
        kaggle_slug="x",
        keypoint_names=("eye_l", "eye_r", "nose", "mouth"),
        flip_pairs=((0, 1),),
        input_size=16,
        metric="mae",
        subsets={"eyes": ("eye_l", "eye_r"), "lower": ("nose", "mouth")},
        options={"nme_points": ["eye_l", "eye_r"]},
    )


def _data(truth: np.ndarray, to_original: np.ndarray) -> KeypointData:
    n = len(truth)
    ids = np.arange(n)
    return KeypointData(np.zeros((n, 16, 16), np.uint8), truth, ids, ids.astype(str), to_original)


def test_mae_is_in_original_pixels_and_nme_is_scale_free(tmp_path: Path) -> None:
    comp = _ibug_like(tmp_path)
    truth = np.array([[[2.0, 2.0], [12.0, 2.0], [7.0, 7.0], [7.0, 11.0]]], np.float32)
    pred = truth + np.array([[[0.0, 0.0], [0.0, 0.0], [0.6, 0.8], [0.0, 3.0]]], np.float32)
    crop = np.array([[[3.0, 0.0, 100.0], [0.0, 3.0, 50.0]]], np.float32)  # original = 3 x + t
    scores = evaluate(comp, pred, _data(truth, crop))
    # input-pixel absolute errors: 0 0 0 0 .6 .8 0 3 -> 4.4 / 8; original pixels: x3
    assert scores.overall == pytest.approx(3 * 4.4 / 8)
    assert scores.per_keypoint == pytest.approx(
        {"eye_l": 0.0, "eye_r": 0.0, "nose": 3 * 0.7, "mouth": 3 * 1.5}
    )
    assert scores.per_group == pytest.approx({"eyes": 0.0, "lower": 3 * 4.4 / 4})
    assert scores.nme == pytest.approx(100 * (1 + 3) / 4 / 10)
    assert scores.nme_per_group == pytest.approx({"eyes": 0.0, "lower": 100 * 2 / 10})
    assert primary(comp, pred, _data(truth, crop)) == pytest.approx(scores.overall)
    assert evaluate(comp, pred, _data(truth, identity_transforms(1))).overall == pytest.approx(
        4.4 / 8
    )


def test_evaluate_on_a_keypoint_subset_and_rmse_competition(tmp_path: Path) -> None:
    comp = _ibug_like(tmp_path)
    comp = Competition(**{**comp.__dict__, "metric": "rmse", "options": {}})
    truth = np.array([[[2.0, 2.0], [12.0, 2.0], [7.0, 7.0], [NAN, NAN]]], np.float32)
    pred = np.array(
        [
            [[7.0, 11.0]],
        ],
        np.float32,
    )  # the mouth only: unlabelled -> NaN score
    scores = evaluate(comp, pred, _data(truth, identity_transforms(1)), keypoints=[3])
    assert np.isnan(scores.overall) and scores.coordinates == 0
    nose = evaluate(comp, np.array([[[8.0, 7.0]]]), _data(truth, identity_transforms(1)), [2])
    assert nose.overall == pytest.approx(np.sqrt(0.5)) and nose.per_keypoint == pytest.approx(
        {"nose": np.sqrt(0.5)}
    )
    assert nose.per_group == {} and nose.nme is None  # no whole subset, no NME for rmse


def test_metric_names_resolve_to_objects_that_carry_what_the_name_decided(
    tmp_path: Path,
) -> None:
    assert get_metric("rmse") is RMSE and get_metric("mae") is MAE and get_metric(MAE) is MAE
    assert metric_for(_ibug_like(tmp_path)) is MAE
    assert (RMSE.space, RMSE.lightgbm, RMSE.scale_power, RMSE.nme) == ("input", "l2", 2, False)
    assert (MAE.space, MAE.lightgbm, MAE.scale_power, MAE.nme) == ("original", "l1", 1, True)
    assert not RMSE.greater_is_better and not MAE.greater_is_better
    diff = np.array([-2.0, 1.0])
    np.testing.assert_array_equal(RMSE.error(diff), [4.0, 1.0])
    np.testing.assert_array_equal(MAE.error(diff), [2.0, 1.0])
    np.testing.assert_array_equal(RMSE.scale_weight(np.array([3.0])), [9.0])
    np.testing.assert_array_equal(MAE.scale_weight(np.array([3.0])), [3.0])


def test_an_unknown_metric_is_a_one_line_error_naming_the_config_field(tmp_path: Path) -> None:
    comp = Competition(**{**_ibug_like(tmp_path).__dict__, "metric": "mape"})
    with pytest.raises(KitError, match=r"competition\.toml: metric = 'mape'.*rmse, mae") as exc:
        metric_for(comp)
    assert str(tmp_path) in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(KitError, match="`metric` field"):
        primary(comp, np.zeros((1, 4, 2)), _data(np.zeros((1, 4, 2)), identity_transforms(1)))


def test_nme_per_face_in_percent_or_as_a_fraction() -> None:
    truth = np.array([[[0.0, 0.0], [10.0, 0.0], [5.0, 5.0]]])
    pred = truth + np.array([[[0.0, 0.0], [0.0, 0.0], [0.0, 3.0]]])
    norm = np.array([10.0])
    np.testing.assert_allclose(nme_per_face(pred, truth, norm), [10.0])
    np.testing.assert_allclose(nme_per_face(pred, truth, norm, unit=1.0), [0.1])
