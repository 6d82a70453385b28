"""ibug-68 end to end: the whole pipeline, through the CLI, on the plug-in's synthetic example.

fetch -> eda -> folds -> train (every family) -> tune -> stack -> submit --dry-run runs on a tiny
copy of competitions/ibug-68 (input_size 64, found through $KIT_COMPETITIONS). The test XML is
rewritten to list known training faces in a shuffled order (one box partly outside its image),
so the submission can be checked against the truth in original image pixels. Coordinates are
checked with this file's own crop formula, not the plug-in's.
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_ibug_reader import xml_faces  # the tests' own reading of a dlib XML

from kit.cli import main
from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData
from kit.data.synthetic import MEAN_SHAPE_68, render_face
from kit.metrics import evaluate
from kit.models import list_models
from kit.submit import make_submission
from kit.training.augment import AugmentConfig, augment_batch
from kit.training.predict import unflip

REPO = Path(__file__).resolve().parents[1]
SIZE = 64  # the smallest input the default heatmap net (stride 4, depth 3) accepts
N_TRAIN, K_FOLDS = 32, 2
# Training faces that become the test faces, in this (not file-name) order; face 0 is the
# example's box partly outside its image.
TEST_FACES = [5, 0, 17, 3, 11, 8]
GROUPS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36),
          "eyes": range(36, 48), "mouth": range(48, 68)}  # fmt: skip
TRAIN_XML = "labels_ibug_300W_train.xml"
TEST_XML = "labels_ibug_300W_test_parsed.xml"


# ------------------------------------------------------------------------- independent geometry


def crop_of(box: np.ndarray, margin: float, size: int) -> tuple[np.ndarray, float]:
    """(x0, y0) edge of the square crop around a dlib box (left, top, w, h) and its scale s
    (input px per original px): the README's formula."""
    left, top, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    return np.array([left + w / 2 - side / 2, top + h / 2 - side / 2]), size / side


def to_input_pixels(points: np.ndarray, boxes: np.ndarray, margin: float, size: int):
    """(N, K, 2) original pixels -> input pixels: x_in = (x - x0 + 0.5) * s - 0.5."""
    out = np.empty_like(points, dtype=np.float64)
    for i, box in enumerate(boxes):
        corner, s = crop_of(box, margin, size)
        out[i] = (points[i] - corner + 0.5) * s - 0.5
    return out


def to_original_pixels(points: np.ndarray, boxes: np.ndarray, margin: float, size: int):
    """(N, K, 2) input pixels -> original pixels: x = (x_in + 0.5) / s - 0.5 + x0."""
    out = np.empty_like(points, dtype=np.float64)
    for i, box in enumerate(boxes):
        corner, s = crop_of(box, margin, size)
        out[i] = (points[i] + 0.5) / s - 0.5 + corner
    return out


def class_test_xml(faces: list[dict]) -> str:
    """Boxes only, in the CS194-26 class file's layout (no declaration, box attrs h l t w)."""
    lines = ["<dataset>", "<name>e2e test faces</name>", "<images>"]
    for face in faces:
        left, top, w, h = (f"{v:g}" for v in face["box"])
        lines += [
            f'  <image file="{face["file"]}">',
            f'    <box height="{h}" left="{left}" top="{top}" width="{w}">',
            "      </box>",
            "  </image>",
        ]
    return "\n".join([*lines, "</images>", "</dataset>", ""])


# ------------------------------------------------------------------------- the pipeline, once


@dataclass
class Pipeline:
    comp: Competition
    work: Path
    submissions: Path
    raw: Path
    train_faces: list[dict]  # the train XML, file order (= the cached training rows)
    test_faces: list[dict]  # the rewritten test XML, its order, with the truth kept
    out: dict[str, str]  # stdout of each CLI step
    margin: float

    def set_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("KIT_COMPETITIONS", str(self.comp.root.parent))
        monkeypatch.setenv("KIT_WORK", str(self.work))
        monkeypatch.setenv("KIT_SUBMISSIONS", str(self.submissions))


def _kit(*args: str) -> str:
    """Run `kit ARGS`; its stdout (stderr and the exit code in the message on failure)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    assert code == 0, f"kit {' '.join(map(str, args))} exited {code}: {err.getvalue()[-2000:]}"
    return out.getvalue()


def _tiny_competition(root: Path) -> Competition:
    """A copy of competitions/ibug-68 at SIZE px, found first on $KIT_COMPETITIONS."""
    folder = root / "competitions" / "ibug-68"
    shutil.copytree(REPO / "competitions" / "ibug-68", folder,
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    toml = folder / "competition.toml"
    text, count = re.subn(r"(?m)^input_size = \d+$", f"input_size = {SIZE}", toml.read_text())
    assert count == 1
    toml.write_text(text)
    return load_competition("ibug-68")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    root = tmp_path_factory.mktemp("ibug-e2e")
    work, submissions = root / "work", root / "submissions"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KIT_COMPETITIONS", str(root / "competitions"))
        mp.setenv("KIT_WORK", str(work))
        mp.setenv("KIT_SUBMISSIONS", str(submissions))
        comp = _tiny_competition(root)
        assert comp.root == root / "competitions" / "ibug-68" and comp.input_size == SIZE
        raw = comp.plugin.write_example(root / "raw", comp, n_train=N_TRAIN, n_test=4, seed=5)
        train_faces = xml_faces(raw / TRAIN_XML)
        test_faces = [train_faces[i] for i in TEST_FACES]
        (raw / TEST_XML).write_text(class_test_xml(test_faces))
        ids = np.arange(len(test_faces) * 136)
        pd.DataFrame({"Id": ids, "Predicted": 0}).to_csv(raw / "sample_submission.csv", index=False)

        out = {"fetch": _kit("fetch", "ibug-68", "--from", raw), "eda": _kit("eda", "ibug-68")}
        out["folds"] = _kit("folds", "ibug-68", "--k", K_FOLDS)
        for family in list_models():
            out[family] = _kit("train", "ibug-68", family, "--epochs", 1, "--set",
                               "batch_size=16", "--device", "cpu")  # fmt: skip
        out["tune"] = _kit("tune", "ibug-68", "--families", "lenet", "--trials", 1,
                           "--epochs", 1, "--best", 1, "--device", "cpu")  # fmt: skip
        out["stack"] = _kit("stack", "ibug-68")
        stack_id = next((comp.workspace.stacks).glob("*/manifest.json")).parent.name
        out["submit"] = _kit("submit", "ibug-68", "--from", stack_id, "--dry-run")
    margin = float(comp.options["crop_margin"])
    return Pipeline(comp, work, submissions, raw, train_faces, test_faces, out, margin)


@pytest.fixture
def e2e(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> Pipeline:
    pipeline.set_env(monkeypatch)  # the autouse work_dir fixture points KIT_WORK elsewhere
    return pipeline


def _runs(e2e: Pipeline) -> list[Path]:
    return sorted(p.parent for p in e2e.comp.workspace.runs.glob("*/manifest.json"))


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _submission(e2e: Pipeline) -> tuple[pd.DataFrame, dict]:
    folder = e2e.submissions / "ibug-68"
    (csv,) = folder.glob("*.csv")
    return pd.read_csv(csv), json.loads(csv.with_suffix(".json").read_text())


# ------------------------------------------------------------------------- no special cases


def _code_strings(path: Path) -> list[str]:
    """String constants of a module that are not docstrings."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            docstrings.add(id(body[0].value))
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_kit_names_no_ibug_fact() -> None:
    """Competition facts live in competitions/ibug-68; no code string in kit/ repeats them."""
    comp = load_competition("ibug-68")
    facts = {comp.name, comp.kaggle_slug, *comp.keypoint_names, *comp.subsets}
    found = {
        (path.relative_to(REPO).as_posix(), text)
        for path in sorted((REPO / "kit").rglob("*.py"))
        for text in _code_strings(path)
        if text in facts or "ibug" in text.lower() or "300w" in text.lower()
    }
    assert found == set()


def test_every_stage_ran_and_every_family_trained(e2e: Pipeline) -> None:
    assert {"sp", "lenet", "convbn", "resnet", "heatmap"} <= set(list_models())
    families = {_manifest(p)["family"] for p in _runs(e2e)}
    assert families == set(list_models())
    assert (e2e.comp.workspace.eda / "summary.json").is_file()
    assert (e2e.comp.workspace.root / "tune.sqlite3").is_file()
    complete = [_manifest(p) for p in _runs(e2e) if _manifest(p)["folds"]["complete"]]
    assert sorted(m["family"] for m in complete) == sorted([*list_models(), "lenet"])  # + tuned
    assert all(m["metric"] == "mae" and m["data"]["train_rows"] == N_TRAIN for m in complete)
    folds = pd.read_csv(e2e.comp.workspace.folds_csv)
    assert sorted(folds.fold.unique()) == list(range(K_FOLDS)) and len(folds) == N_TRAIN
    train = KeypointData.load(e2e.comp.workspace.train_npz)
    assert train.images.shape == (N_TRAIN, SIZE, SIZE)
    for family in list_models():  # the CLI's CV table lists MAE and NME per landmark group
        assert "NME %" in e2e.out[family]
        for group in GROUPS:
            assert f"group {group}" in e2e.out[family], (family, group)


# ------------------------------------------------------------------------- the submission


def test_submission_is_id_predicted_in_test_xml_order_in_original_pixels(e2e: Pipeline) -> None:
    frame, manifest = _submission(e2e)
    n = len(e2e.test_faces)
    assert list(frame.columns) == ["Id", "Predicted"]
    np.testing.assert_array_equal(frame["Id"], np.arange(n * 136))
    assert manifest["source"]["kind"] == "stack" and manifest["dry_run"] is True
    assert manifest["uploaded"] is False and manifest["kaggle_ref"] is None

    stack_test = np.load(Path(manifest["source"]["path"]) / "test.npy")  # (n, 68, 2) crop px
    boxes = np.stack([f["box"] for f in e2e.test_faces])
    expected = to_original_pixels(stack_test, boxes, e2e.margin, SIZE)
    for i, j in ((0, 0), (0, 1), (2, 71), (n - 1, 135)):  # Id = i * 136 + j: x0 y0 x1 y1 ...
        assert frame["Predicted"][i * 136 + j] == pytest.approx(
            expected[i, j // 2, j % 2], abs=1e-3
        )
    np.testing.assert_allclose(frame["Predicted"], expected.reshape(-1), atol=1e-3)


def test_known_truth_in_crop_pixels_comes_back_in_original_pixels(
    e2e: Pipeline, tmp_path: Path
) -> None:
    """A source whose test predictions are the truth (mapped into the crops by this file's
    formula) gives the XML's own coordinates, within 0.01 px, in the test XML's order."""
    test = KeypointData.load(e2e.comp.workspace.test_npz)
    assert list(test.ids) == [f["file"] for f in e2e.test_faces]  # XML order, not sorted
    assert test.to_original[1, 0, 2] < 0  # face 0 of the example: its crop leaves the image
    truth = np.stack([f["points"] for f in e2e.test_faces])
    boxes = np.stack([f["box"] for f in e2e.test_faces])
    run = next(p for p in _runs(e2e) if p.name.startswith("resnet"))
    source = tmp_path / "truth-run"
    source.mkdir()
    shutil.copy(run / "manifest.json", source)
    np.save(source / "test.npy", to_input_pixels(truth, boxes, e2e.margin, SIZE).astype(np.float32))

    result = make_submission(e2e.comp, source, dry_run=True, message="truth")
    frame = pd.read_csv(result.path)
    np.testing.assert_array_equal(frame["Id"], np.arange(len(truth) * 136))
    assert np.abs(frame["Predicted"].to_numpy() - truth.reshape(-1)).max() < 0.01
    result.path.unlink()  # leave one submission for the test above
    result.manifest_path.unlink()


# ------------------------------------------------------------------------- CV metrics


def _expected_scores(e2e: Pipeline, oof: np.ndarray) -> dict:
    """MAE and NME overall and per group, from the XML truth, by this file's own formula."""
    rows = np.isfinite(oof).all(axis=(1, 2))  # a tuning trial predicts fold 0 only
    truth = np.stack([f["points"] for f in e2e.train_faces])[rows]
    boxes = np.stack([f["box"] for f in e2e.train_faces])[rows]
    pred = to_original_pixels(oof[rows], boxes, e2e.margin, SIZE)
    eyes = np.linalg.norm(truth[:, 36] - truth[:, 45], axis=-1)
    dist = np.linalg.norm(pred - truth, axis=-1)

    def nme(cols) -> float:
        return float(np.mean(100 * dist[:, cols].mean(axis=1) / eyes))

    cols = {g: list(r) for g, r in GROUPS.items()}
    return {
        "overall": float(np.abs(pred - truth).mean()),
        "per_group": {g: float(np.abs(pred[:, c] - truth[:, c]).mean()) for g, c in cols.items()},
        "nme": nme(list(range(68))),
        "nme_per_group": {g: nme(c) for g, c in cols.items()},
    }


def test_run_and_stack_cv_report_mae_and_nme_per_landmark_group(e2e: Pipeline) -> None:
    paths = _runs(e2e) + [p.parent for p in e2e.comp.workspace.stacks.glob("*/manifest.json")]
    assert len(paths) >= 6  # five families (+ the tuned lenet) and the stack
    for path in paths:
        cv = _manifest(path)["cv"]
        expected = _expected_scores(e2e, np.load(path / "oof.npy"))
        assert cv["metric"] == "mae"
        assert cv["overall"] == pytest.approx(expected["overall"], rel=1e-4)
        assert cv["nme"] == pytest.approx(expected["nme"], rel=1e-4)
        assert cv["per_group"] == pytest.approx(expected["per_group"], rel=1e-4)
        assert cv["nme_per_group"] == pytest.approx(expected["nme_per_group"], rel=1e-4)


def test_mae_and_nme_per_group_on_a_constructed_example() -> None:
    """The mean 300-W shape, 20 input px between the outer eye corners, in crops of scale 2 and
    3 (original px per input px); jaw off by (3, 4) input px, nose by (1, 0), mouth by (0, 2)."""
    comp = load_competition("ibug-68")
    truth = np.repeat(MEAN_SHAPE_68[None] * 20 + 32, 2, axis=0).astype(np.float32)
    pred = truth.copy()
    pred[:, 0:17] += [3.0, 4.0]
    pred[:, 27:36] += [1.0, 0.0]
    pred[:, 48:68] += [0.0, 2.0]
    to_original = np.zeros((2, 2, 3), np.float32)
    to_original[0, 0, 0] = to_original[0, 1, 1] = 2.0
    to_original[1, 0, 0] = to_original[1, 1, 1] = 3.0
    to_original[:, :, 2] = [[-7.0], [5.0]]
    ids = np.array(["a.jpg", "b.jpg"])
    data = KeypointData(np.zeros((2, SIZE, SIZE), np.uint8), truth, ids, ids, to_original)
    scores = evaluate(comp, pred, data)
    # Input px |error| per coordinate: jaw 3.5, nose 0.5, mouth 1.0 -> 168 / 136 per face;
    # original px: x2 and x3, averaged over both faces: x2.5.
    assert scores.overall == pytest.approx(2.5 * 168 / 136)
    assert scores.per_group == pytest.approx(
        {"jaw": 2.5 * 3.5, "brows": 0.0, "nose": 2.5 * 0.5, "eyes": 0.0, "mouth": 2.5 * 1.0}
    )
    # NME: point distances 5, 1, 2 input px over the 20 px eye distance, at any scale.
    assert scores.nme == pytest.approx(100 * (17 * 5 + 9 * 1 + 20 * 2) / 68 / 20)
    assert scores.nme_per_group == pytest.approx(
        {"jaw": 25.0, "brows": 0.0, "nose": 5.0, "eyes": 0.0, "mouth": 10.0}
    )


def test_worst_faces_picture_shows_faces_with_truth_and_prediction(e2e: Pipeline) -> None:
    for run in _runs(e2e):
        if not (run / "curves.png").is_file():
            continue  # a tuning trial (fold 0 only) draws no pictures
        picture = np.asarray(Image.open(run / "worst.png").convert("RGB")).astype(int)
        assert picture.shape[0] > 200 and picture.shape[1] > 200
        assert picture.std() > 20  # not blank
        r, g, b = picture[..., 0], picture[..., 1], picture[..., 2]
        blue = (b > 200) & (r < 90) & (g > 80) & (g < 160)  # truth #1f77ff
        red = (r > 200) & (g < 80) & (b < 80)  # prediction #ff2020
        grey = (abs(r - g) < 4) & (abs(g - b) < 4) & (r > 40) & (r < 215)  # the faces
        assert blue.sum() > 200 and red.sum() > 100 and grey.sum() > 5000, run.name


# ------------------------------------------------------------------------- flip pairs


def _mirror(shape: np.ndarray, permutation: list[int]) -> np.ndarray:
    """Flip a (K, 2) shape about its centroid's vertical axis and swap left/right names."""
    flipped = shape[permutation].copy()
    flipped[:, 0] = 2 * shape[:, 0].mean() - flipped[:, 0]
    return flipped


def test_flip_pairs_mirror_the_mean_300w_shape() -> None:
    """Without ../shared: the mean 300-W shape (outer-eye distance 1) mirrored with the
    competition's pairs is itself (measured max 0.014); dropping any one pair breaks it."""
    comp = load_competition("ibug-68")
    perm = comp.flip_permutation()
    assert [perm[i] for i in perm] == list(range(68))
    assert [i for i in range(68) if perm[i] == i] == [8, 27, 28, 29, 30, 33, 51, 57, 62, 66]
    assert np.linalg.norm(_mirror(MEAN_SHAPE_68, perm) - MEAN_SHAPE_68, axis=1).max() < 0.03
    for a, b in comp.flip_pairs:
        broken = list(perm)
        broken[a], broken[b] = a, b
        assert np.linalg.norm(_mirror(MEAN_SHAPE_68, broken) - MEAN_SHAPE_68, axis=1).max() > 0.1


def test_flipping_a_face_twice_is_the_identity() -> None:
    """A drawn mean face through the training flip and the TTA un-flip with the 68-point
    permutation: once it lands on its own mirror image, twice it is unchanged."""
    comp = load_competition("ibug-68")
    perm = torch.tensor(comp.flip_permutation())
    points = MEAN_SHAPE_68 * 20 + np.array([31.5, 28.0], np.float32)  # symmetric about x 31.5
    image = render_face(points, SIZE, np.random.default_rng(0))
    images = torch.from_numpy(image).float()[None, None] / 255
    keypoints = torch.from_numpy(points)[None]
    cfg = AugmentConfig(flip=1.0)
    once_images, once = augment_batch(images, keypoints, perm, cfg)
    twice_images, twice = augment_batch(once_images, once, perm, cfg)
    assert torch.allclose(once[0], keypoints[0], atol=0.6)  # the mirrored mean shape is itself
    assert torch.allclose(once[0, 36], keypoints[0, 36], atol=0.6)  # left stays left
    assert torch.allclose(twice, keypoints, atol=1e-4)
    assert torch.allclose(twice_images, images, atol=1e-5)
    assert torch.allclose(unflip(unflip(keypoints, perm, SIZE), perm, SIZE), keypoints)
