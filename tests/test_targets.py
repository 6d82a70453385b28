"""Target plans (masked, complete, 8-30, keypoint subsets) and the linear imputation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from kit.competition import PATH_ENV, load_competition
from kit.errors import KitError
from kit.training.targets import (
    LinearImputer,
    plan_targets,
    resolve_keypoints,
    target_set_names,
)


@pytest.fixture(scope="module")
def fkd():
    return load_competition("facial-keypoints")


def test_plans_for_each_target_set(fkd) -> None:
    masked = plan_targets(fkd, "masked")
    assert masked.keypoints == tuple(range(15)) and len(masked.submodels) == 1
    assert not masked.submodels[0].complete_rows_only and not masked.impute
    assert plan_targets(fkd, "complete").submodels[0].complete_rows_only
    assert plan_targets(fkd, "impute").impute

    plan = plan_targets(fkd, "8-30")
    eight, full = plan.submodels
    assert eight.keypoints == tuple(sorted(fkd.subset_indices("eight")))
    assert full.keypoints == tuple(range(15))
    assert set(full.contributes) == set(range(15)) - set(eight.keypoints)
    # merge: the eight columns from "eight", the rest from "full"
    merged = plan.merge({"eight": np.full((2, 4, 2), 1.0), "full": np.full((2, 15, 2), 2.0)})
    assert merged.shape == (2, 15, 2)
    assert (merged[:, list(eight.keypoints)] == 1).all()
    assert (merged[:, list(full.contributes)] == 2).all()


def test_sub_model_rows(fkd) -> None:
    keypoints = np.zeros((4, 15, 2), np.float32)
    others = [k for k in range(15) if k not in fkd.subset_indices("eight")]
    keypoints[1][others] = np.nan  # only the eight
    keypoints[2] = np.nan  # nothing labelled
    keypoints[3, 0] = np.nan  # one of the eight missing
    rows = np.arange(4)
    eight, full = plan_targets(fkd, "8-30").submodels
    assert eight.training_rows(keypoints, rows).tolist() == [0, 1]
    assert full.training_rows(keypoints, rows).tolist() == [0]
    masked = plan_targets(fkd, "masked").submodels[0]
    assert masked.training_rows(keypoints, rows).tolist() == [0, 1, 3]


def test_keypoint_subsets(fkd) -> None:
    assert resolve_keypoints(fkd, None) == list(range(15))
    assert resolve_keypoints(fkd, "nose") == [10]
    assert resolve_keypoints(fkd, "nose_tip,left_eye_center") == [0, 10]
    plan = plan_targets(fkd, "masked", "mouth")
    assert plan.keypoints == (11, 12, 13, 14)
    with pytest.raises(KitError, match="unknown keypoint or subset chin"):
        resolve_keypoints(fkd, "chin")
    with pytest.raises(KitError, match="unknown target set"):
        plan_targets(fkd, "everything")
    with pytest.raises(KitError, match="drop --keypoints"):
        plan_targets(fkd, "8-30", "eyes")


def test_eight_thirty_needs_an_eight_subset(fkd) -> None:
    # ibug-68 with facial-keypoints' declaration of 8-30 but without its "eight" subset
    ibug = dataclasses.replace(load_competition("ibug-68"), target_sets=fkd.target_sets)
    with pytest.raises(KitError, match="subset named 'eight'"):
        plan_targets(ibug, "8-30")


def test_a_competitions_own_target_sets(
    fkd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert target_set_names(fkd) == ["masked", "complete", "impute", "sources", "8-30"]
    ibug = load_competition("ibug-68")  # declares none
    with pytest.raises(KitError, match="unknown target set '8-30'"):
        plan_targets(ibug, "8-30")
    # a declaration whose subset is not in [subsets] is refused when the config is read
    folder = tmp_path / "odd"
    folder.mkdir()
    monkeypatch.setenv(PATH_ENV, str(tmp_path))
    toml = (fkd.root / "competition.toml").read_text().replace('"facial-keypoints"', '"odd"')
    for old, new, error in (
        ('"8-30" = { subset = "eight"', '"8-30" = { subset = "chin"', r"target_sets\.8-30's"),
        ('subset = "eight"\ntag = "8"', 'subset = "chin"\ntag = "8"', r"submit_split\.subset"),
    ):
        assert toml.count(old) == 1
        (folder / "competition.toml").write_text(toml.replace(old, new))
        with pytest.raises(KitError, match=error + r".* 'chin' is not in \[subsets"):
            load_competition("odd")


def test_impute_fills_a_linearly_related_keypoint_but_not_noise() -> None:
    rng = np.random.default_rng(0)
    n = 200
    keypoints = np.zeros((n, 3, 2), np.float32)
    keypoints[:, 0] = rng.normal(50, 5, (n, 2))  # always present
    keypoints[:, 1] = 0.8 * keypoints[:, 0] + 12 + rng.normal(0, 0.3, (n, 2))  # linear in 0
    keypoints[:, 2] = rng.normal(40, 5, (n, 2))  # unrelated noise
    missing = rng.random(n) < 0.4
    truth = keypoints.copy()
    keypoints[missing, 1:] = np.nan

    imputer = LinearImputer.fit(keypoints, threshold=0.45)
    assert imputer.fits[1].predictors == (0,) and imputer.fits[1].r2 > 0.95
    assert imputer.fits[2].r2 < 0.45
    assert imputer.used() == [1]
    filled, mask = imputer.transform(keypoints)
    assert mask[:, 1].tolist() == missing.tolist() and not mask[:, 2].any()
    np.testing.assert_allclose(filled[missing, 1], truth[missing, 1], atol=1.5)
    assert np.isnan(filled[missing, 2]).all()
    np.testing.assert_array_equal(filled[~missing], keypoints[~missing])  # labels untouched

    strict = LinearImputer.fit(keypoints, threshold=0.999)
    assert strict.used() == [] and not strict.transform(keypoints)[1].any()
