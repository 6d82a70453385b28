"""fetch -> eda -> folds on the ../shared proxies, through the CLI (skipped without ../shared)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from kit.competition import load_competition
from kit.data.arrays import KeypointData
from kit.data.folds import load_folds


def _run_stages(cli, name: str, source) -> tuple[KeypointData, np.ndarray]:
    res = cli("fetch", name, "--from", source)
    assert res.code == 0, res.err
    res = cli("eda", name, "--top", "8")
    assert res.code == 0, res.err
    res = cli("folds", name, "--k", "5", "--seed", "0")
    assert res.code == 0, res.err
    comp = load_competition(name)
    data = KeypointData.load(comp.workspace.train_npz)
    return data, load_folds(comp, data)


def _check_folds(data: KeypointData, folds: np.ndarray, comp_name: str) -> None:
    assert set(np.unique(folds)) == set(range(5))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 0.05 * len(folds)
    share = np.bincount(folds, weights=data.complete) / sizes
    assert share.max() - share.min() < 0.05
    # every source group sits in one fold
    per_group = pd.DataFrame({"group": data.groups, "fold": folds}).groupby("group").fold.nunique()
    assert (per_group == 1).all(), comp_name
    eda = load_competition(comp_name).workspace.eda
    for png in ("outliers.png", "duplicates.png"):
        if (eda / png).exists():
            with Image.open(eda / png) as img:
                assert np.asarray(img.convert("L")).std() > 5


def test_fkd_proxy_stages(cli, shared_data):
    data, folds = _run_stages(cli, "facial-keypoints", shared_data / "fkd-proxy")
    assert len(data) == 2449 and int(data.complete.sum()) == 841
    _check_folds(data, folds, "facial-keypoints")
    missing = pd.read_csv(load_competition("facial-keypoints").workspace.eda / "missing.csv")
    assert len(missing) == 15
    assert (load_competition("facial-keypoints").workspace.eda / "outliers.png").is_file()


def test_ibug_proxy_stages(cli, shared_data):
    data, folds = _run_stages(cli, "ibug-68", shared_data / "ibug-68-proxy")
    assert len(data) == 1207 and data.complete.all()
    assert len(set(data.groups)) < len(data)  # AFW photos with several faces
    _check_folds(data, folds, "ibug-68")
