"""imm-58 end to end through the CLI, on the plug-in's synthetic example (input_size 64):
fetch -> eda -> folds -> train (part 2: all 58 points; part 1: `--keypoints nose_tip`) -> tune ->
stack -> submit, both parts. The test photos are copies of known training photos, so the
submissions are checked in photo pixels with this file's own framing formula."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_ibug_e2e import REPO, _kit

from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData

SIZE, K_FOLDS = 64, 2
PHOTO = (320, 240)  # the example's photos: crop framing takes columns 40..280
TEST_PHOTOS = ["03-2m.jpg", "01-4m.jpg", "02-6f.jpg"]  # become test_000 .. test_002


@dataclass
class Pipeline:
    comp: Competition
    work: Path
    submissions: Path
    truth: np.ndarray  # (3, 58, 2) photo pixels of the test photos
    out: dict[str, str]
    predicted: Path  # kit predict's output folder for test_002.jpg and test_000.jpg

    def set_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KIT_COMPETITIONS", str(self.comp.root.parent))
        monkeypatch.setenv("KIT_WORK", str(self.work))
        monkeypatch.setenv("KIT_SUBMISSIONS", str(self.submissions))


def _asf_pixels(path: Path) -> np.ndarray:
    rows = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    points = [r for r in rows if len(r) in (7, 10) and not r[0].startswith("#")]
    return np.array([[float(p[2]) * PHOTO[0], float(p[3]) * PHOTO[1]] for p in points])


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    root = tmp_path_factory.mktemp("imm-e2e")
    work, submissions = root / "work", root / "submissions"
    folder = root / "competitions" / "imm-58"
    shutil.copytree(REPO / "competitions" / "imm-58", folder,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    toml = folder / "competition.toml"
    toml.write_text(re.sub(r"(?m)^input_size = \d+$", f"input_size = {SIZE}", toml.read_text()))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KIT_COMPETITIONS", str(root / "competitions"))
        mp.setenv("KIT_WORK", str(work))
        mp.setenv("KIT_SUBMISSIONS", str(submissions))
        comp = load_competition("imm-58")
        assert comp.input_size == SIZE
        raw = comp.plugin.write_example(root / "raw", comp, n_train=18, n_test=1, seed=7)
        shutil.rmtree(raw / "test")
        for k, name in enumerate(TEST_PHOTOS):
            shutil.copy(raw / "imm_face_db" / name, root / f"test_{k:03d}.jpg")
        (raw / "test").mkdir()
        for k in range(len(TEST_PHOTOS)):
            shutil.move(root / f"test_{k:03d}.jpg", raw / "test")
        ids = pd.DataFrame({"Id": np.arange(len(TEST_PHOTOS) * 116), "Predicted": 0})
        ids.to_csv(raw / "sample_submission.csv", index=False)
        truth = np.stack([_asf_pixels((raw / "imm_face_db" / n).with_suffix(".asf"))
                          for n in TEST_PHOTOS])  # fmt: skip

        out = {"fetch": _kit("fetch", "imm-58", "--from", raw), "eda": _kit("eda", "imm-58")}
        out["folds"] = _kit("folds", "imm-58", "--k", K_FOLDS)
        common = ("--epochs", 2, "--set", "batch_size=8", "--device", "cpu")
        out["train"] = _kit("train", "imm-58", "lenet", *common)
        out["nose"] = _kit("train", "imm-58", "lenet", "--keypoints", "nose_tip", *common)
        out["tune"] = _kit("tune", "imm-58", "--families", "sp", "--trials", 1,
                           "--epochs", 1, "--best", 1, "--device", "cpu")  # fmt: skip
        out["stack"] = _kit("stack", "imm-58")
        stack_id = next(comp.workspace.stacks.glob("*/manifest.json")).parent.name
        out["submit"] = _kit("submit", "imm-58", "--from", stack_id, "--dry-run")
        nose_run = _run_of(comp, keypoints=1)
        out["submit_nose"] = _kit("submit", "imm-58", "--from", nose_run.name, "--dry-run")
        photos = [raw / "test" / "test_002.jpg", raw / "test" / "test_000.jpg"]
        full_run = _run_of(comp, keypoints=58)
        out["predict"] = _kit("predict", "imm-58", *photos, "--from", full_run.name,
                              "--out", root / "predicted")  # fmt: skip
    return Pipeline(comp, work, submissions, truth, out, root / "predicted")


@pytest.fixture
def e2e(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    pipeline.set_env(monkeypatch)
    return pipeline


def _run_of(comp: Competition, keypoints: int) -> Path:
    for manifest in sorted(comp.workspace.runs.glob("*/manifest.json")):
        if len(json.loads(manifest.read_text())["keypoints"]) == keypoints:
            return manifest.parent
    raise AssertionError(f"no run with {keypoints} keypoints")


def _submission(e2e: Pipeline, rows: int) -> tuple[pd.DataFrame, dict]:
    for csv in sorted((e2e.submissions / "imm-58").glob("*.csv")):
        frame = pd.read_csv(csv)
        if len(frame) == rows:
            return frame, json.loads(csv.with_suffix(".json").read_text())
    raise AssertionError(f"no submission of {rows} rows")


def _photo_pixels(points: np.ndarray) -> np.ndarray:
    """Input pixels -> photo pixels of the 320x240 example photos, crop framing (x0 = 40)."""
    side = min(PHOTO)
    return (points + 0.5) * side / SIZE - 0.5 + np.array([(PHOTO[0] - side) / 2, 0.0])


def test_every_stage_wrote_its_files(e2e: Pipeline) -> None:
    ws = e2e.comp.workspace
    assert (ws.eda / "summary.json").is_file() and ws.folds_csv.is_file()
    folds = pd.read_csv(ws.folds_csv)
    persons = folds.id.str[:2]
    assert (folds.groupby(persons).fold.nunique() == 1).all()  # a person never spans folds
    assert "CV mae" in e2e.out["train"] and "nose_tip" in e2e.out["nose"]


def test_part_two_submission_is_the_stack_in_photo_pixels(e2e: Pipeline) -> None:
    frame, manifest = _submission(e2e, 3 * 116)
    stack_dir = e2e.comp.workspace.stacks / manifest["source"]["id"]
    test = np.load(stack_dir / "test.npy")
    expected = _photo_pixels(test.astype(np.float64)).reshape(-1)
    np.testing.assert_allclose(frame.Predicted, expected, atol=2e-3)
    assert list(frame.Id) == list(range(3 * 116)) and manifest["kaggle_slug"] == ""


def test_the_cache_holds_the_asf_landmarks_in_input_pixels(e2e: Pipeline) -> None:
    """The test photos' own training rows map back to their .asf points by this file's formula."""
    train = KeypointData.load(e2e.comp.workspace.train_npz)
    rows = [list(train.ids).index(name) for name in TEST_PHOTOS]
    back = _photo_pixels(train.keypoints[rows].astype(np.float64))
    np.testing.assert_allclose(back, e2e.truth, atol=1e-3)


def test_part_one_submission_is_the_nose_tip_alone(e2e: Pipeline) -> None:
    frame, manifest = _submission(e2e, 3 * 2)
    run = e2e.comp.workspace.runs / manifest["source"]["id"]
    test = np.load(run / "test.npy")  # (3, 1, 2): the nose tip only
    assert test.shape == (3, 1, 2)
    np.testing.assert_allclose(frame.Predicted, _photo_pixels(test).reshape(-1), atol=2e-3)
    assert manifest["source"]["keypoints"] == 1


def test_a_subset_that_is_not_submittable_is_refused(
    e2e: Pipeline, capsys: pytest.CaptureFixture
) -> None:
    from kit.cli import main

    _kit("train", "imm-58", "sp", "--keypoints", "eyes", "--epochs", 1, "--device", "cpu")
    eyes = _run_of(e2e.comp, keypoints=16)
    assert main(["submit", "imm-58", "--from", eyes.name, "--dry-run"]) != 0
    err = capsys.readouterr().err
    assert "predicts 16 of 58 keypoints" in err and "nose_tip" in err


def test_predict_on_whole_photos_is_the_run_in_photo_pixels(e2e: Pipeline) -> None:
    """kit predict frames a photo as the cache did: the run's own test predictions come back."""
    run = _run_of(e2e.comp, keypoints=58)
    expected = _photo_pixels(np.load(run / "test.npy").astype(np.float64))[[2, 0]]
    table = pd.read_csv(e2e.predicted / "keypoints.csv")
    assert list(table.keypoint[:58]) == list(e2e.comp.keypoint_names)
    assert table.box_from.eq("none").all()
    got = table[["x", "y"]].to_numpy().reshape(2, 58, 2)
    np.testing.assert_allclose(got, expected, atol=2e-3)
    assert (e2e.predicted / "test_002.png").is_file() and (e2e.predicted / "test_000.png").is_file()
