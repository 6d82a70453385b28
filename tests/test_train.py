"""The training engine on a tiny synthetic competition: OOF integrity, resume, target sets, CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import kit
from kit import provenance
from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData, identity_transforms
from kit.data.synthetic import fkd15_from_68, make_faces
from kit.errors import KitError
from kit.progress import Event
from kit.store import RunResult, done_folds, make_run_id
from kit.training import loop
from kit.training.checkpoint import load_fold_model
from kit.training.config import parse_overrides, resolve_config
from kit.training.device import available_cpus, configure_cpu_threads, resolve_device
from kit.training.ema import warmed_up_decay
from kit.training.flip import flip_permutation
from kit.training.oof import OofAssembler, OofLeakError
from kit.training.optim import lr_factor
from kit.training.predict import predict_rows, predict_with_flip, unflip
from kit.training.runs import train_run
from kit.training.targets import plan_targets

SIZE = 32
N_TRAIN, N_TEST, K_FOLDS = 48, 8, 3
# sp shrunk to a few thousand weights: every test trains in well under a second per fold.
TINY = {"hidden": 16, "batch_size": 16, "patience": 0}


def write_tiny_competition(n_train: int = N_TRAIN, k: int = K_FOLDS, seed: int = 0) -> Competition:
    """facial-keypoints at 32 px with FKD's missingness: half the rows keep only the "eight"."""
    comp = dataclasses.replace(
        load_competition("facial-keypoints"), name="tiny-fkd", input_size=SIZE
    )
    write_tiny_arrays(comp, n_train, N_TEST, k, seed)
    return comp


def write_tiny_arrays(comp: Competition, n_train: int, n_test: int, k: int, seed: int) -> None:
    """Synthetic faces at comp.input_size into the cache (train + unlabelled test) and a k-fold
    folds file (fold = row % k); every other training row keeps only the "eight" keypoints."""
    images, points = make_faces(n_train + n_test, comp.input_size, seed=seed)
    keypoints = fkd15_from_68(points)
    eight = comp.subset_indices("eight")
    others = [i for i in range(comp.num_keypoints) if i not in eight]
    keypoints[np.ix_(np.arange(1, n_train, 2), others)] = np.nan
    keypoints[n_train:] = np.nan  # the test split has no labels

    def split(rows: slice) -> KeypointData:
        ids = np.arange(len(images[rows]), dtype=np.int64)
        return KeypointData.whole_images(images[rows], keypoints[rows], ids)

    ws = comp.workspace
    split(slice(0, n_train)).save(ws.train_npz)
    split(slice(n_train, None)).save(ws.test_npz)
    ids = np.arange(n_train)
    pd.DataFrame({"id": ids, "fold": ids % k, "group": ids.astype(str)}).to_csv(
        ws.folds_csv, index=False
    )


@pytest.fixture
def comp() -> Competition:
    return write_tiny_competition()


def run_tiny(comp: Competition, **kwargs) -> RunResult:
    overrides = {**TINY, **kwargs.pop("overrides", {})}
    kwargs.setdefault("epochs", 2)
    kwargs.setdefault("pictures", False)
    kwargs.setdefault("device", "cpu")
    return train_run(comp, "sp", overrides, **kwargs)


# ---------------------------------------------------------------- OOF integrity


@pytest.mark.device
def test_oof_covers_every_row_once_by_its_own_fold_model(
    comp: Competition, device: torch.device, close: dict
) -> None:
    result = run_tiny(comp, pictures=True, device=str(device))
    data = KeypointData.load(comp.workspace.train_npz)
    folds = np.arange(N_TRAIN) % K_FOLDS
    assert result.oof.shape == (N_TRAIN, 15, 2)
    assert np.isfinite(result.oof).all()
    np.testing.assert_array_equal(result.oof_folds, folds)
    assert result.test.shape == (N_TEST, 15, 2) and np.isfinite(result.test).all()

    # Each OOF row is exactly what its own fold's checkpoint predicts (with flip TTA).
    perm = comp.flip_permutation()
    images = torch.from_numpy(data.images).unsqueeze(1).to(device)
    test_images = torch.from_numpy(KeypointData.load(comp.workspace.test_npz).images)
    test_images = test_images.unsqueeze(1).to(device)
    tests = []
    for fold in range(K_FOLDS):
        model = load_fold_model(result.path, fold, device=str(device))
        rows = np.flatnonzero(folds == fold)
        pred = predict_rows(model, images, rows, device, flip_perm=perm)
        np.testing.assert_allclose(result.oof[rows], pred, **close)
        tests.append(predict_rows(model, test_images, None, device, flip_perm=perm))
    np.testing.assert_allclose(result.test, np.mean(tests, axis=0), **close)

    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["folds"] | {"file": None, "sha256": None} == {
        "file": None, "sha256": None, "total": 3, "trained": [0, 1, 2], "complete": True,
        "rows_predicted": N_TRAIN, "rows_total": N_TRAIN,
    }  # fmt: skip
    assert manifest["keypoints"] == list(comp.keypoint_names)
    assert set(manifest["cv"]["per_keypoint"]) == set(comp.keypoint_names)
    assert manifest["cv"]["overall"] == pytest.approx(result.cv_score)
    # The CV score is the RMSE of the stored OOF against the labels.
    labelled = np.isfinite(data.keypoints)
    expected = np.sqrt(np.mean((result.oof[labelled] - data.keypoints[labelled]) ** 2))
    assert result.cv_score == pytest.approx(expected, rel=1e-5)
    for name in ("config.json", "curves.png", "worst.png", "fold-0.pt", "fold-2.done.json"):
        assert (result.path / name).stat().st_size > 0


@pytest.mark.parametrize("keep", ["last", "best"])
def test_a_fold_keeps_the_last_epoch_unless_asked_for_the_best(
    comp: Competition, keep: str
) -> None:
    """The fold's OOF comes from the kept epoch's weights: its score is that epoch's
    validation score (no TTA here, so the two are the same predictions)."""
    overrides = {"tta": False, "keep": keep, "lr": 0.05}  # a high lr: epochs differ
    result = run_tiny(comp, epochs=4, overrides=overrides, folds=1)
    record = json.loads((result.path / "fold-0.done.json").read_text())
    main = record["submodels"]["main"]
    scores = [h["val_score"] for h in main["history"]]
    kept = 4 if keep == "last" else int(np.argmin(scores)) + 1
    assert main["kept_epoch"] == kept and main["epochs_run"] == 4
    assert record["score"] == pytest.approx(scores[kept - 1], rel=1e-5)
    assert main["last_val_score"] == pytest.approx(scores[-1])
    assert main["best_val_score"] == pytest.approx(min(scores))


def test_keep_must_be_last_or_best() -> None:
    with pytest.raises(KitError, match="keep must be one of last, best"):
        resolve_config("sp", {"keep": "middle"})


def test_oof_assembler_rejects_a_leak_a_duplicate_and_a_gap() -> None:
    folds = np.array([0, 1, 2, 0, 1, 2])
    pred = np.zeros((2, 1, 2), np.float32)
    leaking = OofAssembler(folds, 1)
    with pytest.raises(OofLeakError, match="row 1 belongs to fold 1"):
        leaking.add(0, np.array([0, 1]), pred)  # row 1 was in fold 0's training rows
    twice = OofAssembler(folds, 1)
    twice.add(0, np.array([0, 3]), pred)
    with pytest.raises(OofLeakError, match="predicted twice"):
        twice.add(0, np.array([0, 3]), pred)
    gap = OofAssembler(folds, 1)
    gap.add(0, np.array([0, 3]), pred)
    with pytest.raises(OofLeakError, match="no prediction"):
        gap.finish([0, 1])
    assert np.array_equal(gap.finish([0])[1], [0, -1, -1, 0, -1, -1])


@pytest.mark.device
def test_a_tampered_fold_artifact_fails_the_leak_assertion(
    comp: Competition, device: torch.device
) -> None:
    result = run_tiny(comp, folds=2, device=str(device))
    with np.load(result.path / "fold-0.npz") as z:
        arrays = dict(z)
    arrays["rows"][0] = 1  # row 1 is in fold 1: fold 0's model trained on it
    with open(result.path / "fold-0.npz", "wb") as f:
        np.savez(f, **arrays)
    (result.path / "manifest.json").unlink()
    with pytest.raises(OofLeakError, match="OOF leak"):
        run_tiny(comp, folds=2, device=str(device))


@pytest.mark.device
def test_flip_tta_unflips_and_permutes_back(device: torch.device) -> None:
    width = 10
    perm = torch.tensor([1, 0, 2], device=device)  # keypoints 0 and 1 are left/right partners

    def bright_pixels(images: torch.Tensor) -> torch.Tensor:
        """A perfect 'model': keypoint 0 = leftmost bright pixel, 1 = rightmost, 2 = dimmer one."""
        out = []
        for img in images[:, 0]:
            ys, xs = torch.nonzero(img == 1.0, as_tuple=True)
            y2, x2 = torch.nonzero(img == 0.5, as_tuple=True)
            left, right = xs.argmin(), xs.argmax()
            out.append([[xs[left], ys[left]], [xs[right], ys[right]], [x2[0], y2[0]]])
        return torch.tensor(out, dtype=torch.float32, device=images.device)

    images = torch.zeros(2, 1, width, width)
    images[0, 0, 3, 2] = images[0, 0, 5, 7] = 1.0
    images[0, 0, 8, 6] = 0.5
    images[1, 0, 1, 1] = images[1, 0, 2, 9] = 1.0
    images[1, 0, 4, 4] = 0.5
    images = images.to(device)
    truth = bright_pixels(images).cpu()
    np.testing.assert_allclose(predict_with_flip(bright_pixels, images, perm).cpu(), truth)
    # A model with a constant bias b in x: TTA cancels it (x + b and x - b average to x).
    bias = torch.tensor([1.5, 0.0], device=device)
    biased = predict_with_flip(lambda im: bright_pixels(im) + bias, images, perm)
    np.testing.assert_allclose(biased.cpu(), truth)
    mirrored = bright_pixels(images.flip(-1))
    np.testing.assert_allclose(unflip(mirrored, perm, width).cpu(), truth)


# ---------------------------------------------------------------- target sets


def test_masked_loss_trains_on_rows_with_missing_keypoints(comp: Competition) -> None:
    result = run_tiny(comp, folds=1, overrides={"optimizer": "adamw", "lr": 3e-3}, epochs=3)
    record = json.loads((result.path / "fold-0.done.json").read_text())
    main = record["submodels"]["main"]
    assert main["train_rows"] == N_TRAIN - N_TRAIN // K_FOLDS  # sparse rows are used too
    losses = [h["train_loss"] for h in main["history"]]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert result.manifest.folds["rows_predicted"] == N_TRAIN // K_FOLDS
    assert result.manifest.folds["complete"] is False
    assert np.isnan(result.oof[result.oof_folds == -1]).all()


def test_complete_target_set_uses_only_complete_rows(comp: Competition) -> None:
    result = run_tiny(comp, folds=1, target_set="complete")
    record = json.loads((result.path / "fold-0.done.json").read_text())
    train_rows = np.flatnonzero(np.arange(N_TRAIN) % K_FOLDS != 0)
    assert record["submodels"]["main"]["train_rows"] == np.count_nonzero(train_rows % 2 == 0)


def test_eight_thirty_merges_two_models_into_full_oof(comp: Competition) -> None:
    result = run_tiny(comp, target_set="8-30")
    assert result.oof.shape == (N_TRAIN, 15, 2) and np.isfinite(result.oof).all()
    assert result.test.shape == (N_TEST, 15, 2)
    record = json.loads((result.path / "fold-0.done.json").read_text())
    train_rows = np.flatnonzero(np.arange(N_TRAIN) % K_FOLDS != 0)
    assert record["submodels"]["eight"]["train_rows"] == len(train_rows)  # all have the eight
    assert record["submodels"]["full"]["train_rows"] == np.count_nonzero(train_rows % 2 == 0)
    # The merge: the eight keypoints come from "eight", the others from "full".
    eight = comp.subset_indices("eight")
    eight_model = load_fold_model(result.path, 0, "eight")
    full_model = load_fold_model(result.path, 0, "full")
    data = KeypointData.load(comp.workspace.train_npz)
    rows = np.flatnonzero(result.oof_folds == 0)
    images = torch.from_numpy(data.images).unsqueeze(1)
    cpu, perm = torch.device("cpu"), comp.flip_permutation()
    eight_perm = flip_permutation(comp, tuple(sorted(eight)))
    from_eight = predict_rows(eight_model, images, rows, cpu, flip_perm=eight_perm)
    from_full = predict_rows(full_model, images, rows, cpu, flip_perm=perm)
    np.testing.assert_allclose(result.oof[rows][:, sorted(eight)], from_eight, atol=1e-4)
    others = [k for k in range(15) if k not in eight]
    np.testing.assert_allclose(result.oof[rows][:, others], from_full[:, others], atol=1e-4)
    assert result.manifest.plan["submodels"][1]["complete_rows_only"] is True


def test_keypoint_subset_run_holds_only_those_keypoints(comp: Competition) -> None:
    result = run_tiny(comp, folds=1, keypoints="nose")
    assert result.oof.shape == (N_TRAIN, 1, 2)
    assert result.manifest.keypoints == ["nose_tip"]
    assert result.manifest.keypoint_indices == [comp.keypoint_names.index("nose_tip")]
    with pytest.raises(KitError, match="flip partners right_eye_center"):
        run_tiny(comp, folds=1, keypoints="left_eye_center")


def test_impute_target_set_fills_training_labels_per_fold(comp: Competition) -> None:
    result = run_tiny(comp, folds=1, target_set="impute")
    record = json.loads((result.path / "fold-0.done.json").read_text())
    fits = record["imputation"]["fits"]
    assert record["imputation"]["filled"] > 0
    assert set(fits["left_eye_inner_corner"]["predictors"]) == {
        "left_eye_center", "right_eye_center", "nose_tip", "mouth_center_bottom_lip"
    }  # fmt: skip
    # Fitted on fold 0's training rows only: its complete rows, not all complete rows.
    train_rows = np.flatnonzero(np.arange(N_TRAIN) % K_FOLDS != 0)
    assert fits["left_eye_inner_corner"]["rows"] == np.count_nonzero(train_rows % 2 == 0)
    # The validation truth is never imputed: scored coordinates = the real labels only.
    data = KeypointData.load(comp.workspace.train_npz)
    rows = np.flatnonzero(np.arange(N_TRAIN) % K_FOLDS == 0)
    assert result.manifest.cv["coordinates"] == np.isfinite(data.keypoints[rows]).sum()


# ---------------------------------------------------------------- resume and reuse


@pytest.mark.device
def test_interrupted_run_resumes_at_the_next_fold(comp: Competition, device: torch.device) -> None:
    """One-epoch folds on --device: a run stopped in fold 1 resumes there, keeping fold 0."""

    def on_epoch(do) -> Callable[[Event], None]:
        return lambda event: do(event.detail) if event.what == "epoch" else None

    def stop_at_fold_one(report) -> None:
        if report.fold == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_tiny(comp, epochs=1, device=str(device), on_event=on_epoch(stop_at_fold_one))
    [path] = list(comp.workspace.runs.iterdir())
    assert done_folds(path) == [0] and not (path / "manifest.json").exists()
    before = (path / "fold-0.pt").stat().st_mtime_ns, (path / "fold-0.done.json").read_text()
    trained: list[int] = []
    record_fold = on_epoch(lambda r: trained.append(r.fold))
    result = run_tiny(comp, epochs=1, device=str(device), on_event=record_fold)
    assert result.path == path and result.resumed_folds == [0] and result.trained_folds == [1, 2]
    assert set(trained) == {1, 2}
    after = (path / "fold-0.pt").stat().st_mtime_ns, (path / "fold-0.done.json").read_text()
    assert before == after
    assert np.isfinite(result.oof).all() and result.manifest.folds["complete"]

    again = run_tiny(
        comp, epochs=1, device=str(device), on_event=on_epoch(lambda r: pytest.fail("retrained"))
    )
    assert again.reused and again.run_id == result.run_id
    assert again.cv_score == result.cv_score


def test_more_folds_later_reuse_the_finished_ones(comp: Competition) -> None:
    quick = run_tiny(comp, folds=1)
    full = run_tiny(comp)
    assert full.run_id == quick.run_id and full.resumed_folds == [0]
    assert full.trained_folds == [1, 2]


def test_run_id_depends_on_config_data_and_folds(comp: Competition) -> None:
    base = run_tiny(comp, folds=1).run_id
    assert run_tiny(comp, folds=1, seed=1).run_id != base
    assert run_tiny(comp, folds=1, target_set="complete").run_id != base
    table = pd.read_csv(comp.workspace.folds_csv)
    table["fold"] = (table["id"] + 1) % K_FOLDS
    table.to_csv(comp.workspace.folds_csv, index=False)
    assert run_tiny(comp, folds=1).run_id != base


def test_run_id_depends_on_the_training_code(
    comp: Competition, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An edit to kit's training code or to the competition's plugin gives new runs."""
    plugin_copy = Path(shutil.copytree(comp.root, tmp_path / "competition"))
    comp = dataclasses.replace(comp, root=plugin_copy)
    kit_copy = Path(shutil.copytree(Path(kit.__file__).parent, tmp_path / "kit"))
    monkeypatch.setattr(kit, "__file__", str(kit_copy / "__init__.py"))

    def run_id() -> str:
        config, plan = resolve_config("sp", TINY), plan_targets(comp, "masked")
        return make_run_id(config.to_dict(), plan.describe(), provenance.run_inputs(comp))

    base = run_id()
    assert run_id() == base
    with open(kit_copy / "models" / "sp.py", "a") as f:
        f.write("# an edit\n")
    after_kit_edit = run_id()
    with open(plugin_copy / comp.module_file, "a") as f:
        f.write("# an edit\n")
    assert len({base, after_kit_edit, run_id()}) == 3
    result = run_tiny(comp, folds=1)
    assert result.manifest.code_sha256 == provenance.code_checksum(comp)


def test_training_is_deterministic_on_cpu(comp: Competition) -> None:
    first = run_tiny(comp, folds=1)
    oof = first.oof.copy()
    for p in first.path.iterdir():
        p.unlink()
    np.testing.assert_array_equal(run_tiny(comp, folds=1).oof, oof)


def test_early_stopping_keeps_the_best_epochs_weights(
    comp: Competition, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8])  # best at epoch 2; patience 2 stops at 4
    monkeypatch.setattr(loop, "primary", lambda *args, **kwargs: next(scores))
    snapshots = []
    epoch = loop.Trainer.epoch

    def recording_epoch(self, data, rows):
        loss = epoch(self, data, rows)
        snapshots.append({k: v.clone() for k, v in self.model.state_dict().items()})
        return loss

    monkeypatch.setattr(loop.Trainer, "epoch", recording_epoch)
    overrides = {"patience": 2, "tta": False, "keep": "best"}  # early stopping, as the seeds did
    result = run_tiny(comp, folds=1, epochs=6, overrides=overrides)
    record = json.loads((result.path / "fold-0.done.json").read_text())["submodels"]["main"]
    assert record["epochs_run"] == 4 and record["best_epoch"] == 2
    assert [h["val_score"] for h in record["history"]] == [3.0, 2.0, 2.5, 2.6]
    kept = load_fold_model(result.path, 0).state_dict()
    assert all(torch.equal(kept[k], snapshots[1][k]) for k in kept)
    assert not all(torch.equal(kept[k], snapshots[3][k]) for k in kept)


def test_learning_rate_schedules() -> None:
    assert lr_factor(0, 100, 10, "cosine") == pytest.approx(0.1)  # linear warmup
    assert lr_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(99, 100, 10, "cosine") < 0.01
    assert lr_factor(50, 100, 10, "none") == 1.0
    assert lr_factor(99, 100, 30, "onecycle") < 0.01


# ---------------------------------------------------------------- moving average of the weights

# convbn shrunk: BatchNorm buffers and the regression prior, in well under a second per fold.
TINY_BN = {"width": 0.125, "hidden": 16, "batch_size": 16, "tta": False}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def recorded_steps(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    """The trained network's states (not its average's): before the first step, after each."""
    states: list[dict[str, torch.Tensor]] = []
    step = loop.Trainer.step

    def recording_step(self, images, points, weights=None):
        if not states:
            states.append(snapshot(self.model))
        loss = step(self, images, points, weights)
        states.append(snapshot(self.model))
        return loss

    monkeypatch.setattr(loop.Trainer, "step", recording_step)
    return states


def train_convbn(comp: Competition, **overrides) -> RunResult:
    overrides = {**TINY_BN, **overrides}
    return train_run(comp, "convbn", overrides, epochs=3, folds=1, device="cpu", pictures=False)


def test_ema_averages_the_weights_without_changing_the_training(
    comp: Competition, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same seed with and without EMA: the same training steps; ema=0 keeps the trained
    weights as they are, ema > 0 keeps (and validates, saves, predicts with) their average."""
    states = recorded_steps(monkeypatch)
    off = train_convbn(comp)
    plain = list(states)
    states.clear()
    decay = 0.9
    on = train_convbn(comp, ema=decay)
    assert len(states) == len(plain) == 1 + 3 * 2  # 32 training rows in batches of 16
    for before, after in zip(plain, states, strict=True):
        assert all(torch.equal(before[k], after[k]) for k in before)

    kept_off = load_fold_model(off.path, 0).state_dict()
    assert all(torch.equal(kept_off[k], plain[-1][k]) for k in kept_off)

    expected = dict(states[0])  # the average starts at the initial weights, prior included
    for n, state in enumerate(states[1:]):
        weight = 1 - min(decay, (1 + n) / (10 + n))
        for k, value in state.items():
            floating = value.is_floating_point()
            expected[k] = torch.lerp(expected[k], value, weight) if floating else value
    kept_on = load_fold_model(on.path, 0).state_dict()
    assert kept_on.keys() == expected.keys()
    for k in kept_on:
        torch.testing.assert_close(kept_on[k], expected[k])
    assert "codec.prior" in kept_on and kept_on["codec.prior"].abs().sum() > 0
    assert "network.0.0.1.running_var" in kept_on  # BatchNorm statistics are averaged too
    weight = "network.1.weight"
    assert not torch.allclose(kept_on[weight], plain[-1][weight])

    # Each epoch validated the average, and the fold's OOF is the saved average's prediction.
    record = json.loads((on.path / "fold-0.done.json").read_text())
    history = record["submodels"]["main"]["history"]
    assert record["score"] == pytest.approx(history[-1]["val_score"], rel=1e-5)
    data = KeypointData.load(comp.workspace.train_npz)
    rows = np.flatnonzero(on.oof_folds == 0)
    images = torch.from_numpy(data.images).unsqueeze(1)
    model = load_fold_model(on.path, 0)
    np.testing.assert_allclose(on.oof[rows], predict_rows(model, images, rows, torch.device("cpu")))


def test_keep_best_keeps_the_best_epochs_average(
    comp: Competition, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores = iter([3.0, 2.0, 2.5])
    monkeypatch.setattr(loop, "primary", lambda *args, **kwargs: next(scores))
    averages, trained = [], []
    epoch = loop.Trainer.epoch

    def recording_epoch(self, data, rows):
        loss = epoch(self, data, rows)
        averages.append(snapshot(self.eval_model))
        trained.append(snapshot(self.model))
        return loss

    monkeypatch.setattr(loop.Trainer, "epoch", recording_epoch)
    result = train_convbn(comp, ema=0.5, keep="best")
    kept = load_fold_model(result.path, 0).state_dict()
    assert all(torch.equal(kept[k], averages[1][k]) for k in kept)
    assert not all(torch.equal(kept[k], trained[1][k]) for k in kept)
    assert not all(torch.equal(kept[k], averages[2][k]) for k in kept)


def test_a_heatmap_average_reloads_with_either_decode(comp: Competition) -> None:
    """A learnt soft-argmax temperature is averaged too; the saved weights rebuild a plain
    model, and the same weights decode by DARK without retraining."""
    # width 8: torch 2.13 on a CPU corrupts its heap in the backward pass of a 1x1 stride-2
    # channels_last conv with 2, 4 or 6 input channels (one thread), as width 4 would have
    overrides = {"width": 8, "depth": 2, "batch_size": 16, "tta": False, "learn_beta": True}
    result = train_run(
        comp, "heatmap", {**overrides, "ema": 0.5}, epochs=1, folds=1, device="cpu",
        pictures=False,
    )  # fmt: skip
    data = KeypointData.load(comp.workspace.train_npz)
    rows = np.flatnonzero(result.oof_folds == 0)
    images = torch.from_numpy(data.images).unsqueeze(1)
    cpu = torch.device("cpu")
    soft = load_fold_model(result.path, 0)
    assert soft.codec.log_beta.item() != 0.0
    np.testing.assert_allclose(result.oof[rows], predict_rows(soft, images, rows, cpu), atol=1e-4)
    dark = load_fold_model(result.path, 0, hparams={"decode": "dark"})
    assert dark.codec.decode_mode == "dark"
    assert torch.equal(dark.codec.log_beta, soft.codec.log_beta)
    predicted = predict_rows(dark, images, rows, cpu)
    assert np.isfinite(predicted).all() and not np.allclose(predicted, result.oof[rows])


def test_ema_decay_warms_up_and_must_be_below_one() -> None:
    assert warmed_up_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_up_decay(0.999, 90) == pytest.approx(91 / 100)
    assert warmed_up_decay(0.9, 10_000) == 0.9
    assert resolve_config("sp").train["ema"] == 0.0
    assert resolve_config("sp", {"ema": 0}).train["ema"] == 0.0
    assert resolve_config("resnet", {"ema": 0.999}).train["ema"] == 0.999
    for bad in (1, 1.5, -0.1, True, float("nan")):
        with pytest.raises(KitError, match=r"setting ema must be a decay in \[0, 1\)"):
            resolve_config("sp", {"ema": bad})
    with pytest.raises(KitError, match="ema must be a number"):
        resolve_config("sp", {"ema": "on"})


# ---------------------------------------------------------------- config and errors


def test_config_resolution_and_errors() -> None:
    config = resolve_config("sp", {"lr": 0.05, "hidden": 64, "rotate_deg": 5.0}, epochs=3)
    assert config.model["hidden"] == 64 and config.train["lr"] == 0.05
    assert config.train["epochs"] == 3 and config.train["optimizer"] == "sgd"
    assert config.augment.rotate_deg == 5.0
    with pytest.raises(KitError, match=r"unknown setting bogus for model .sp.*valid: .*lr"):
        resolve_config("sp", {"bogus": 1})
    with pytest.raises(KitError, match=r"unknown model .nope.*valid: .*sp"):
        resolve_config("nope")
    with pytest.raises(KitError, match="optimizer"):
        resolve_config("sp", {"optimizer": "rmsprop"})
    with pytest.raises(KitError, match="lr must be a number"):
        resolve_config("sp", {"lr": "fast"})
    with pytest.raises(KitError, match=r"flip=2\.0 is out of range"):
        resolve_config("sp", {"flip": 2})
    # Same values in another spelling are the same config (hence the same run id).
    assert resolve_config("sp", {"flip": 0, "epochs": 3.0}) == resolve_config(
        "sp", {"flip": 0.0, "epochs": 3}
    )
    assert parse_overrides(["lr=1e-3", "tta=false", "optimizer=adamw", "brightness=0.3,1.4"]) == {
        "lr": 0.001, "tta": False, "optimizer": "adamw", "brightness": "0.3,1.4"
    }  # fmt: skip
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(KitError, match="no CUDA"):
            resolve_device("cuda")


def test_cpu_threads_follow_kit_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("KIT_THREADS", "1")
        assert configure_cpu_threads() == 1
        monkeypatch.setenv("KIT_THREADS", "999")  # capped at the CPUs this process may use
        assert configure_cpu_threads() == available_cpus()
        monkeypatch.setenv("KIT_THREADS", "many")
        with pytest.raises(KitError, match="KIT_THREADS"):
            configure_cpu_threads()
        monkeypatch.delenv("KIT_THREADS")
        assert 1 <= configure_cpu_threads() <= available_cpus()
    finally:
        torch.set_num_threads(before)


def test_missing_folds_file_is_a_one_line_error(comp: Competition) -> None:
    os.remove(comp.workspace.folds_csv)
    with pytest.raises(KitError, match=r"no folds file.*kit folds tiny-fkd"):
        run_tiny(comp)


# ---------------------------------------------------------------- CLI


@pytest.fixture
def tiny_cli_competition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Competition:
    """The tiny competition as a competitions/ folder on KIT_COMPETITIONS, for the CLI."""
    source = Path(load_competition("facial-keypoints").root) / "competition.toml"
    folder = tmp_path / "competitions" / "tiny-fkd"
    folder.mkdir(parents=True)
    text = source.read_text().replace('name = "facial-keypoints"', 'name = "tiny-fkd"')
    (folder / "competition.toml").write_text(
        text.replace("input_size = 96", f"input_size = {SIZE}")
    )
    monkeypatch.setenv("KIT_COMPETITIONS", str(tmp_path / "competitions"))
    return write_tiny_competition()


def test_cli_train_writes_a_manifest_with_scores(cli, tiny_cli_competition: Competition) -> None:
    result = cli(
        "train", "tiny-fkd", "sp", "--folds", "2", "--epochs", "1", "--device", "cpu",
        "--set", "hidden=16", "--set", "batch_size=16", "--set", "tta=false",
    )  # fmt: skip
    assert result.code == 0, result.err
    [manifest_path] = tiny_cli_competition.workspace.runs.glob("*/manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["folds"]["trained"] == [0, 1]
    assert manifest["config"]["model"]["hidden"] == 16
    assert manifest["config"]["train"]["tta"] is False
    assert np.isfinite(manifest["cv"]["overall"])
    assert "nose_tip" in result.out and manifest["run_id"] in result.out

    again = cli(
        "train", "tiny-fkd", "sp", "--folds", "2", "--epochs", "1", "--device", "cpu",
        "--set", "hidden=16", "--set", "batch_size=16", "--set", "tta=false",
    )  # fmt: skip
    assert again.code == 0 and "reusing" in again.out


def test_cli_train_rejects_unknown_model_and_setting(cli, tiny_cli_competition) -> None:
    bad_model = cli("train", "tiny-fkd", "nope")
    assert bad_model.code != 0
    assert "unknown model 'nope'" in bad_model.err and "sp" in bad_model.err
    assert len(bad_model.err.strip().splitlines()) == 1
    bad_key = cli("train", "tiny-fkd", "sp", "--set", "bogus=1")
    assert bad_key.code != 0 and "unknown setting bogus" in bad_key.err
    assert len(bad_key.err.strip().splitlines()) == 1
    bad_syntax = cli("train", "tiny-fkd", "sp", "--set", "lr")
    assert bad_syntax.code != 0 and "key=value" in bad_syntax.err


def test_ibug_run_scores_mae_in_original_pixels_and_nme(tmp_path: Path) -> None:
    comp = dataclasses.replace(load_competition("ibug-68"), name="tiny-ibug", input_size=SIZE)
    images, points = make_faces(24 + 4, SIZE, seed=3)
    crop = identity_transforms(len(images)) * 4.0  # a 4x downscaled face box at (100, 60)
    crop[:, :, 2] = [100.0, 60.0]
    ids = np.array([f"img/{i}.jpg" for i in range(len(images))])
    test_points = np.full_like(points[24:], np.nan)
    train = KeypointData(images[:24], points[:24], ids[:24], ids[:24], crop[:24])
    train.save(comp.workspace.train_npz)
    KeypointData(images[24:], test_points, ids[24:], ids[24:], crop[24:]).save(
        comp.workspace.test_npz
    )
    pd.DataFrame({"id": ids[:24], "fold": np.arange(24) % 2, "group": ids[:24]}).to_csv(
        comp.workspace.folds_csv, index=False
    )
    result = run_tiny(comp, folds=1, epochs=1)
    cv = result.manifest.cv
    rows = np.flatnonzero(result.oof_folds == 0)
    in_original = train.subset(rows).to_original_coords(result.oof[rows])
    truth = train.subset(rows).to_original_coords(points[rows])
    assert cv["metric"] == "mae"
    assert cv["overall"] == pytest.approx(np.abs(in_original - truth).mean(), rel=1e-5)
    assert cv["nme"] > 0 and set(cv["nme_per_group"]) == {"jaw", "brows", "nose", "eyes", "mouth"}
    assert result.oof.shape == (24, 68, 2) and result.test.shape == (4, 68, 2)
