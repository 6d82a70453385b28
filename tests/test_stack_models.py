"""A stack's saved meta-models: exported and loaded they reproduce its test predictions
exactly; `kit predict` loads them instead of fitting; a stack written before they were saved
fits them once, says so and saves them; a damaged file is refused in one line and `kit stack`
rebuilds it."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from test_stack import TINY_NAME, base, one_thread, tiny_competition, tiny_run, truth_arrays

import kit.predict.models
import kit.training.runs
from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData
from kit.errors import DataError, KitError
from kit.predict import predict_images
from kit.progress import Event
from kit.stack import BLEND, LIGHTGBM, PICKED, RIDGE, StackResult, StackSettings, stack
from kit.stack.fitted import FittedStack
from kit.stack.meta import stack_predictions
from kit.store import (
    load_run,
    load_stack,
    meta_model_problem,
    read_meta_models,
    sha256_file,
    write_meta_models,
)
from kit.submit import resolve_source

FKD = load_competition("facial-keypoints")


# ------------------------------------------------------------------------- on arrays


def test_saved_meta_models_reproduce_every_methods_test_predictions(tmp_path: Path) -> None:
    """300 rows: every fold fits a ridge and LightGBM trees (the "image" features decide the
    error's sign); written, read back and parsed they give the very same numbers."""
    truth, test_truth = truth_arrays(300, 10, seed=9)
    rng = np.random.default_rng(10)
    bright = rng.random(300) < 0.5
    images = np.repeat(np.where(bright, 200, 40).astype(np.uint8), 64).reshape(300, 8, 8)
    shift = np.where(bright, 1.0, -1.0)[:, None, None]
    bases = [
        base("a", truth + shift + rng.normal(0, 0.2, truth.shape), test_truth),
        base("b", truth + rng.normal(0, 0.5, truth.shape), test_truth + 0.3),
    ]
    data = KeypointData.whole_images(images, truth.astype(np.float32), np.arange(300))
    test_images = rng.integers(0, 255, (10, 8, 8), dtype=np.uint8)
    settings = StackSettings(frozenset({"image", "diffs"}), workers=1)
    outcome = stack_predictions(FKD, data, test_images, np.arange(300) % 3, bases, settings)
    exported = outcome.fitted.export()
    assert exported.texts and "image-pca" in exported.arrays  # trees and the PCA are saved
    entry = write_meta_models(tmp_path, exported)
    folder = SimpleNamespace(stack_id="s", path=tmp_path, run_ids=["a", "b"],
                             manifest=SimpleNamespace(meta_models=entry))  # fmt: skip
    loaded = FittedStack.from_export(read_meta_models(folder))
    tests = [b.test for b in bases]
    picked = loaded.predict(tests, test_images)
    np.testing.assert_array_equal(picked, outcome.picked_test)
    for method in (BLEND, RIDGE, LIGHTGBM, "b"):
        every = dataclasses.replace(loaded, picks=dict.fromkeys(loaded.picks, method))
        np.testing.assert_array_equal(every.predict(tests, test_images), outcome.test[method])


# ------------------------------------------------------------------------- runs -> stack -> predict


@dataclasses.dataclass
class Stacked:
    root: Path
    stack: StackResult


@pytest.fixture(scope="module")
def stacked(tmp_path_factory: pytest.TempPathFactory) -> Stacked:
    """The tiny facial-keypoints competition with 120 training rows (enough for LightGBM's
    inner folds) and a stack of two 1-epoch runs."""
    root = tmp_path_factory.mktemp("stack-models")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KIT_WORK", str(root / "work"))
        mp.setattr(kit.training.runs, "configure_cpu_threads", one_thread)
        comp = tiny_competition(root, mp, n_train=120)
        runs = [tiny_run(comp), tiny_run(comp, overrides={"lr": 0.03}, seed=1)]
        result = stack(comp, runs, features={"diffs"})
    return Stacked(root, result)


@pytest.fixture
def tiny(stacked: Stacked, monkeypatch: pytest.MonkeyPatch) -> Competition:
    monkeypatch.setenv("KIT_WORK", str(stacked.root / "work"))
    monkeypatch.setenv("KIT_COMPETITIONS", str(stacked.root / "competitions"))
    monkeypatch.setenv("KIT_THREADS", "1")
    return load_competition(TINY_NAME)


@pytest.fixture
def no_fitting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any fit of meta-models in kit predict fails the test."""

    def refit(*args, **kwargs):
        raise AssertionError("kit predict fitted meta-models")

    monkeypatch.setattr(kit.predict.models, "stack_predictions", refit)


def forget_meta_models(comp: Competition, stack_id: str) -> None:
    """Make the stack as kit wrote it before meta-models were saved."""
    path = comp.workspace.stacks / stack_id
    shutil.rmtree(path / "meta")
    manifest = json.loads((path / "manifest.json").read_text())
    del manifest["meta_models"]
    (path / "manifest.json").write_text(json.dumps(manifest))


def predict_test(comp: Competition, stack_id: str, events: list | None = None) -> np.ndarray:
    images = KeypointData.load(comp.workspace.test_npz).images
    on_event = events.append if events is not None else lambda event: None
    source = resolve_source(comp, stack_id)
    return predict_images(comp, source, images, device="cpu", on_event=on_event)


def loaded_test(comp: Competition, stack_id: str) -> np.ndarray:
    """The loaded meta-models on the base runs' own test.npy: the stack's test.npy's inputs."""
    found = load_stack(comp, stack_id)
    fitted = FittedStack.from_export(read_meta_models(found))
    tests = []
    for run_id in found.run_ids:
        run = load_run(comp, run_id)
        wide = np.full((len(run.test), comp.num_keypoints, 2), np.nan)
        wide[:, run.keypoints] = run.test
        tests.append(wide)
    images = KeypointData.load(comp.workspace.test_npz).images
    picked = fitted.predict(tests, images)
    return picked[:, found.manifest.keypoint_indices].astype(np.float32)


def test_kit_stack_saves_its_meta_models_with_checksums(stacked: Stacked, tiny: Competition):
    found = load_stack(tiny, stacked.stack.stack_id)
    files = found.manifest.meta_models["files"]
    assert "meta/meta-models.json" in files and "meta/ridge.npz" in files
    boosters = [rel for rel in files if rel.startswith("meta/lightgbm/")]
    assert boosters, "no LightGBM trees in the tiny stack: the test would not cover them"
    for rel, sha in files.items():
        assert sha256_file(found.path / rel) == sha
    import lightgbm

    assert lightgbm.Booster(model_file=str(found.path / boosters[0])).num_trees() > 0
    np.testing.assert_array_equal(loaded_test(tiny, found.stack_id), found.test)


def test_predict_loads_the_meta_models_instead_of_fitting(
    stacked: Stacked, tiny: Competition, no_fitting: None
) -> None:
    events: list[Event] = []
    pred = predict_test(tiny, stacked.stack.stack_id, events)
    np.testing.assert_allclose(pred, stacked.stack.test, atol=1e-4)
    assert not [e for e in events if e.stage == "predict"]


def test_an_old_stack_fits_its_meta_models_once_and_saves_them(
    stacked: Stacked, tiny: Competition, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack_id = stacked.stack.stack_id
    saved = load_stack(tiny, stack_id).manifest.meta_models
    forget_meta_models(tiny, stack_id)
    events: list[Event] = []
    first = predict_test(tiny, stack_id, events)
    said = [e.text for e in events if e.stage == "predict"]
    assert len(said) == 1 and "no saved meta-models" in said[0] and "fitting them once" in said[0]
    assert load_stack(tiny, stack_id).manifest.meta_models == saved  # the same files again
    np.testing.assert_array_equal(loaded_test(tiny, stack_id), stacked.stack.test)
    events.clear()
    monkeypatch.setattr(kit.predict.models, "stack_predictions", None)  # a fit would fail
    np.testing.assert_array_equal(predict_test(tiny, stack_id, events), first)
    assert not [e for e in events if e.stage == "predict"]


def test_an_old_stack_refuses_to_fit_again_on_other_folds(
    stacked: Stacked, tiny: Competition
) -> None:
    forget_meta_models(tiny, stacked.stack.stack_id)
    folds = tiny.workspace.folds_csv
    kept = folds.read_bytes()
    try:
        folds.write_bytes(kept + b"\n")
        with pytest.raises(KitError, match="another folds file"):
            predict_test(tiny, stacked.stack.stack_id)
    finally:
        folds.write_bytes(kept)
    predict_test(tiny, stacked.stack.stack_id)  # fits and saves them again


def test_a_damaged_meta_model_file_is_one_line_and_kit_stack_rebuilds_it(
    stacked: Stacked, tiny: Competition, cli, tmp_path: Path
) -> None:
    found = load_stack(tiny, stacked.stack.stack_id)
    rel = next(r for r in found.manifest.meta_models["files"] if r.startswith("meta/lightgbm/"))
    path = found.path / rel
    path.write_text(path.read_text().replace("leaf_value=", "leaf_value=1", 1))
    with pytest.raises(DataError, match="does not match its sha256"):
        predict_test(tiny, found.stack_id)
    photo = tmp_path / "face.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(photo)
    done = cli("predict", TINY_NAME, photo, "--box", "0,0,32,32", "--from", found.stack_id)
    assert done.code == DataError.exit_code
    (line,) = [line for line in done.messages.splitlines() if "does not match" in line]
    runs = ",".join(found.run_ids)
    assert f"{path}: " in line
    assert line.endswith(
        f"(rebuild the stack: `kit stack {TINY_NAME} --runs {runs} --features diffs`)"
    )
    rebuilt = cli("stack", TINY_NAME, "--runs", runs, "--features", "diffs")
    assert rebuilt.code == 0, rebuilt.err
    said = " ".join(rebuilt.err.split())
    assert f"file {rel} does not match its sha256 in manifest.json: fitting the stack again" in said
    assert meta_model_problem(load_stack(tiny, found.stack_id)) is None
    assert (
        cli("predict", TINY_NAME, photo, "--box", "0,0,32,32", "--from", found.stack_id).code == 0
    )


def test_the_benchmark_times_a_second_predict_on_the_tiny_stack(
    stacked: Stacked, tiny: Competition, tmp_path: Path
) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import predict_from_stack

    out = tmp_path / "bench.json"
    entry = predict_from_stack.main(
        [TINY_NAME, "--stack", stacked.stack.stack_id, "--out", str(out)]
    )
    assert len(entry["calls"]) == 2 and all(c["said"] == [] for c in entry["calls"])
    assert entry["meta_models"]["saved"] and entry["meta_models"]["files"] > 2
    assert list(json.loads(out.read_text())) == [f"{TINY_NAME}/{stacked.stack.stack_id}"]


def test_a_stacks_candidates_are_checked_where_they_are_read(
    stacked: Stacked, tmp_path: Path
) -> None:
    """The demo's table reads every method's test predictions from candidates.npz: a damaged
    archive or a member of the wrong shape is a DataError naming the file and kit stack."""
    copy = dataclasses.replace(stacked.stack, path=tmp_path / "stack")
    shutil.copytree(stacked.stack.path, copy.path)
    rows = len(stacked.stack.test)
    methods = [m for m in stacked.stack.table.method if m != PICKED][:2]
    read = copy.candidate_tests(methods, rows)
    assert sorted(read) == sorted(methods) and all(a.shape[0] == rows for a in read.values())
    with pytest.raises(DataError, match=r"candidates\.npz.*lacks test/nope.*kit stack"):
        copy.candidate_tests(["nope"], rows)
    with pytest.raises(DataError, match=rf"test/{methods[0]} has shape"):
        copy.candidate_tests(methods, rows + 1)
    archive = copy.path / "candidates.npz"
    archive.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(DataError, match=r"candidates\.npz.*cannot read"):
        copy.candidate_tests(methods, rows)
