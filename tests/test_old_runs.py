"""A run folder written by kit before the store/trainer split (tests/fixtures/run_format_1, made
by the code at commit 573b91f: lenet, target set 8-30, fold 0 of 3 on a 16 px tiny-fkd) still
loads: its id is recomputed from its manifest, and its checkpoint predicts what it predicted."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData
from kit.store import done_folds, list_runs, load_run, make_run_id
from kit.training.checkpoint import fold_predictions, load_fold_model
from kit.training.device import device_images
from kit.training.targets import plan_targets

FIXTURE = Path(__file__).parent / "fixtures" / "run_format_1"
RUN_ID = "lenet-0e67ceaede6e"


@pytest.fixture
def old_comp(work_dir: Path) -> Competition:
    shutil.copytree(FIXTURE, work_dir)
    return dataclasses.replace(load_competition("facial-keypoints"), name="tiny-fkd", input_size=16)


def test_an_old_runs_id_is_recomputed_from_its_manifest(old_comp: Competition) -> None:
    run = load_run(old_comp, RUN_ID)
    m = run.manifest
    inputs = {
        "data": {"train": m.data["train"], "test": m.data["test"]},
        "folds": m.folds["sha256"],
        "code": m.code_sha256,
    }
    assert make_run_id(m.config, m.plan, inputs) == RUN_ID
    assert [r.run_id for r in list_runs(old_comp)] == [RUN_ID]
    assert done_folds(run.path) == [0]
    assert [s["name"] for s in m.plan["submodels"]] == ["eight", "full"]


def test_the_8_30_plan_is_still_the_one_its_id_hashed(old_comp: Competition) -> None:
    """facial-keypoints declares 8-30 in competition.toml; the plan it makes describes itself
    exactly as the old run's manifest recorded it (plan.describe() is hashed into run ids)."""
    m = load_run(old_comp, RUN_ID).manifest
    assert plan_targets(old_comp, "8-30").describe() == m.plan


def test_an_old_checkpoint_predicts_what_it_predicted(old_comp: Competition) -> None:
    run = load_run(old_comp, RUN_ID)
    for sub in ("eight", "full"):
        assert not load_fold_model(run.path, 0, sub).training
    test = KeypointData.load(old_comp.workspace.test_npz)
    images = device_images(test.images, torch.device("cpu"))
    (pred,) = fold_predictions(old_comp, run, 0, torch.device("cpu"), (images, None))
    saved = np.load(run.path / "fold-0.npz")["test"]
    np.testing.assert_allclose(pred, saved, rtol=0, atol=1e-5)
