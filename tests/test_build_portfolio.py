"""benchmarks/build_portfolio.py: a fold-0 run becomes a normalised learning curve, and the
entries it writes load as kit run's portfolio (with the other device's entries kept)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kit.planning.portfolio import load_portfolio
from kit.planning.zeroshot import Evaluation
from kit.training.runs import train_run
from tests.test_train import write_tiny_competition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import build_portfolio  # noqa: E402


def test_a_fold_zero_run_gives_a_curve_normalised_by_the_mean_shape() -> None:
    comp = write_tiny_competition()
    run = train_run(comp, "sp", {"hidden": 16, "batch_size": 16}, epochs=3, folds=1, pictures=False)
    baseline = build_portfolio.mean_shape_score(comp)
    assert baseline > 0
    e = build_portfolio.evaluation(run, "sp-x", baseline)
    scores = [h["val_score"] for h in run.folder.fold_record(0).submodels["main"]["history"]]
    assert e.curve == pytest.approx([s / baseline for s in scores])
    assert len(e.curve) == 3 and e.epoch_seconds > 0 and e.competition == comp.name


def test_written_entries_load_as_the_portfolio_and_keep_the_other_device(tmp_path: Path) -> None:
    config = build_portfolio.Config("lenet", {"lr": 0.002, "epochs": 20, "batch_size": 16})
    curves = [
        Evaluation(config.name, "a", (0.9, 0.7, 0.6, 0.55, 0.55, 0.55), 2.0),
        Evaluation(config.name, "b", (0.8, 0.7, 0.5, 0.5, 0.5, 0.5), 3.0),
    ]
    entry = build_portfolio.portfolio_entry(config, curves, "cpu", 'made by "a test"')
    assert entry["overrides"] == {"lr": 0.002, "batch_size": 16}  # epochs are the planner's
    assert entry["min_epochs"] == 2 and entry["max_epochs"] == 4  # 0.7 <= 0.75; flat after 4
    gpu = {**entry, "name": "gpu-only", "devices": ["gpu"]}
    path = tmp_path / "portfolio.toml"
    path.write_text(build_portfolio.dump_entry(gpu))
    assert [e["name"] for e in build_portfolio.kept_entries(path, "cpu")] == ["gpu-only"]
    assert build_portfolio.kept_entries(path, "cuda") == []
    path.write_text(build_portfolio.dump_entry(entry) + "\n" + build_portfolio.dump_entry(gpu))
    loaded = load_portfolio(path)
    assert [e.name for e in loaded] == [config.name, "gpu-only"]
    assert loaded[0].overrides == entry["overrides"] and loaded[0].evidence.startswith("made by")
    points = dict(entry["curve"])  # the mean curve at its marks: 1, min, max // 2, max, last
    assert sorted(points) == [1, 2, 4, 6] and points[4] == pytest.approx((0.55 + 0.5) / 2)
    assert loaded[0].expected(4) == pytest.approx(points[4])


def test_each_competition_judges_an_entry_by_its_own_curve(tmp_path: Path) -> None:
    config = build_portfolio.Config("lenet", {"lr": 0.002})
    curves = [
        Evaluation(config.name, "ibug-68", (0.9, 0.5, 0.4, 0.4), 2.0),
        Evaluation(config.name, "imm-58", (0.9, 0.8, 0.7, 0.7), 3.0),
    ]
    path = tmp_path / "portfolio.toml"
    path.write_text(
        build_portfolio.dump_entry(build_portfolio.portfolio_entry(config, curves, "cpu", "t"))
    )
    (entry,) = load_portfolio(path)
    assert dict(entry.curves["ibug-68"])[4] == pytest.approx(0.4)
    assert entry.for_competition("ibug-68").expected(4) == pytest.approx(0.4)
    assert entry.for_competition("imm-58").expected(4) == pytest.approx(0.7)
    assert entry.expected(4) == pytest.approx(0.55)  # the mean where not measured
    assert entry.for_competition("facial-keypoints") is entry


def test_the_ladder_scales_each_familys_best_config_and_skips_known_ones() -> None:
    best = build_portfolio.Config("lenet", {"lr": 0.002, "width": 2})
    worse = build_portfolio.Config("lenet", {"lr": 0.01, "width": 2})
    known = build_portfolio.Config("lenet", {"lr": 0.002, "width": 4})
    scores = {best.name: 0.4, worse.name: 0.6, known.name: 0.5}
    variants = build_portfolio.ladder([best, worse, known], scores)
    assert [v.overrides for v in variants] == [{"lr": 0.002, "width": 1}]
    assert build_portfolio.ladder([best], {}) == []  # no evidence, no variant
