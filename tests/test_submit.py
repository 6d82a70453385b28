"""kit submit: both competitions' file formats exactly, the 8 + 30 split, the manifest that
kit track reads, and uploads against the fake Kaggle server (success and every failure)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_kaggle import FakeKaggle, kaggle_server_fixture  # noqa: F401  (the kaggle_server fixture)
from test_stack import TINY_NAME, one_torch_thread, tiny_competition, tiny_run  # noqa: F401

import kit.kaggle
from kit.cli.tables import submission_summary
from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData
from kit.errors import DataError, KaggleError, KitError
from kit.fetch import fetch
from kit.kaggle import RetryPolicy
from kit.submit import make_submission, submissions_dir
from kit.track.views import read_manifests

pytestmark = pytest.mark.usefixtures("submissions")  # conftest: a fresh folder


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Competition:
    return tiny_competition(tmp_path, monkeypatch)


def read_submission(path: Path) -> pd.DataFrame:
    assert path.read_text().splitlines()[0] in ("RowId,Location", "Id,Predicted")
    return pd.read_csv(path)


def expected_fkd_values(
    comp: Competition, test: KeypointData, main: np.ndarray, eight: np.ndarray | None
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(lookup, expected Location per lookup row, eight-only mask), worked out row by row."""
    lookup = comp.plugin.read_lookup(comp.workspace.raw, comp)
    eight_names = {comp.keypoint_names[k] for k in comp.subset_indices("eight")}
    asked = lookup.groupby("ImageId")["FeatureName"].apply(
        lambda f: {name.rsplit("_", 1)[0] for name in f}
    )
    values, only_eight = [], []
    for image, feature in zip(lookup["ImageId"], lookup["FeatureName"], strict=True):
        name, axis = feature.rsplit("_", 1)
        row = list(test.ids).index(image)
        short = asked[image] <= eight_names
        source = eight if (short and eight is not None) else main
        values.append(source[row, comp.keypoint_names.index(name), "xy".index(axis)])
        only_eight.append(short)
    return lookup, np.clip(values, 0, comp.input_size), np.array(only_eight)


# ------------------------------------------------------------------------- facial-keypoints


def test_fkd_file_fills_the_lookup_table_clips_and_splits_8_30(
    tiny: Competition, tmp_path: Path
) -> None:
    test = KeypointData.load(tiny.workspace.test_npz)
    m = len(test)
    main = np.tile(np.arange(1, 16, dtype=np.float64)[None, :, None], (m, 1, 2))
    main[:, :, 1] += 0.5
    main += np.arange(m)[:, None, None] / 100  # every cell its own value
    main[0, 0, 0], main[0, 1, 1] = -3.0, 99.0  # image 1 asks for all 30: both get clipped
    eight = main + 0.25
    path = tmp_path / "sub.csv"
    info = tiny.plugin.write_submission(
        path, tiny, tiny.workspace.raw, test, main, {"eight": eight}
    )
    frame = read_submission(path)
    lookup, expected, only_eight = expected_fkd_values(tiny, test, main, eight)
    assert list(frame.columns) == ["RowId", "Location"]
    np.testing.assert_array_equal(frame["RowId"], lookup["RowId"])  # each once, in order
    np.testing.assert_allclose(frame["Location"], expected, atol=1e-4)
    assert frame["Location"].iloc[0] == 0.0 and frame["Location"].iloc[3] == 32.0
    assert 0 < only_eight.sum() < len(only_eight)  # both kinds of image are present
    images_only_eight = lookup.loc[only_eight, "ImageId"].nunique()
    assert info == {
        "rows": len(lookup),
        "images": m,
        "images_from_subset": images_only_eight,
        "values_clipped": 2,
    }
    # Without the eight source every image takes the main predictions.
    tiny.plugin.write_submission(path, tiny, tiny.workspace.raw, test, main)
    _, plain, _ = expected_fkd_values(tiny, test, main, None)
    np.testing.assert_allclose(read_submission(path)["Location"], plain, atol=1e-4)


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda f: f.rename(columns={"Location": "Value"}), "header is RowId,Value"),
        (lambda f: pd.concat([f, f.iloc[:1]]), "RowId 1 appears twice"),
        (lambda f: f.iloc[1:], "RowId 1 is missing"),
        (lambda f: f.assign(Location=f.Location.where(f.RowId != 5, np.nan)), "RowId 5: Loc"),
        (lambda f: f.assign(Location=f.Location.where(f.RowId != 7, 40.0)), r"in \[0, 32\]"),
        (lambda f: f.assign(RowId=f.RowId.where(f.RowId != 2, 99999)), "RowId 99999 is not in"),
    ],
)
def test_fkd_check_rejects_a_bad_file(
    tiny: Competition, tmp_path: Path, corrupt, message: str
) -> None:
    test = KeypointData.load(tiny.workspace.test_npz)
    path = tmp_path / "sub.csv"
    predictions = np.full((len(test), 15, 2), 16.0)
    tiny.plugin.write_submission(path, tiny, tiny.workspace.raw, test, predictions)
    tiny.plugin.check_submission(path, tiny, tiny.workspace.raw, test)  # valid as written
    corrupt(pd.read_csv(path)).to_csv(path, index=False)
    with pytest.raises(DataError, match=message):
        tiny.plugin.check_submission(path, tiny, tiny.workspace.raw, test)


def test_fkd_refuses_to_write_a_missing_prediction(tiny: Competition, tmp_path: Path) -> None:
    test = KeypointData.load(tiny.workspace.test_npz)
    predictions = np.full((len(test), 15, 2), 16.0)
    predictions[:, 10] = np.nan  # nose_tip, which every image asks for
    with pytest.raises(DataError, match="no prediction for ImageId 1, nose_tip_x"):
        tiny.plugin.write_submission(
            tmp_path / "sub.csv", tiny, tiny.workspace.raw, test, predictions
        )
    assert not (tmp_path / "sub.csv").exists()


# ------------------------------------------------------------------------- ibug-68


def test_ibug_file_has_id_i_times_136_plus_j_in_original_pixels(tmp_path: Path) -> None:
    comp = load_competition("ibug-68")
    source = comp.plugin.write_example(tmp_path / "ibug", comp, n_train=4, n_test=3, seed=2)
    fetch(comp, source)
    test = KeypointData.load(comp.workspace.test_npz)
    rng = np.random.default_rng(0)
    original = rng.uniform(0, 300, (3, 68, 2))  # the answer, in original image pixels
    predictions = comp.plugin.to_input(original, test.to_original)  # what a model outputs
    assert not np.allclose(predictions, original, atol=1.0)  # the crops do rescale
    path = tmp_path / "ibug.csv"
    info = comp.plugin.write_submission(path, comp, comp.workspace.raw, test, predictions)
    frame = read_submission(path)
    assert list(frame.columns) == ["Id", "Predicted"]
    np.testing.assert_array_equal(frame["Id"], np.arange(3 * 136))
    for i, j in ((0, 0), (1, 1), (2, 135), (1, 70)):  # Id = i * 136 + j, j = 2 * point + axis
        assert frame["Predicted"][i * 136 + j] == pytest.approx(
            original[i, j // 2, j % 2], abs=1e-3
        )
    np.testing.assert_allclose(frame["Predicted"], original.reshape(-1), atol=1e-3)
    assert info["rows"] == 408 and info["images"] == 3
    sample = pd.read_csv(comp.workspace.raw / "sample_submission.csv")
    np.testing.assert_array_equal(sample["Id"], frame["Id"])  # the sample's ids, same order

    frame.iloc[[0, 1]] = frame.iloc[[1, 0]].to_numpy()  # two rows swapped
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match="row 1 has Id 1, expected 0"):
        comp.plugin.check_submission(path, comp, comp.workspace.raw, test)
    with pytest.raises(DataError, match="shape"):
        comp.plugin.write_submission(path, comp, comp.workspace.raw, test, predictions[:2])


# ------------------------------------------------------------------------- make_submission


def test_dry_run_writes_a_validated_file_and_a_manifest_kit_track_reads(
    tiny: Competition, submissions: Path
) -> None:
    run = tiny_run(tiny)
    result = make_submission(tiny, subset_source="none", message="first try")
    folder = submissions / TINY_NAME
    assert submissions_dir(tiny) == folder and result.path.parent == folder
    assert result.path.name.endswith(f"-{run.run_id}.csv")
    assert result.manifest_path == result.path.with_suffix(".json")
    test = KeypointData.load(tiny.workspace.test_npz)
    tiny.plugin.check_submission(result.path, tiny, tiny.workspace.raw, test)
    _, expected, _ = expected_fkd_values(tiny, test, run.test, None)
    np.testing.assert_allclose(read_submission(result.path)["Location"], expected, atol=1e-4)

    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["file"] == result.path.name
    assert manifest["cv_score"] == pytest.approx(run.cv_score)
    assert manifest["kaggle_ref"] is None and manifest["uploaded"] is False
    assert manifest["runs"] == [run.run_id] and manifest["stack"] is None
    assert manifest["source"]["kind"] == "run" and manifest["message"] == "first try"
    assert "git_commit" in manifest and manifest["settings"]["rows"] == len(expected)
    frame, warnings = read_manifests(folder)
    assert warnings == []
    assert frame.to_dict("records") == [
        {"ref": None, "file": result.path.name, "cv_score": pytest.approx(run.cv_score),
         "manifest": result.manifest_path.name},
    ]  # fmt: skip


def test_eight_only_images_take_the_eight_source(tiny: Competition) -> None:
    full = tiny_run(tiny)
    eight = tiny_run(tiny, keypoints="eight", overrides={"lr": 0.02})
    result = make_submission(tiny, full.run_id, subset_source=eight.run_id[:9])
    test = KeypointData.load(tiny.workspace.test_npz)
    eight_full = np.full((len(test), 15, 2), np.nan)
    eight_full[:, eight.keypoints] = eight.test
    _, expected, only_eight = expected_fkd_values(tiny, test, full.test, eight_full)
    values = read_submission(result.path)["Location"].to_numpy()
    np.testing.assert_allclose(values, expected, atol=1e-4)
    _, main_only, _ = expected_fkd_values(tiny, test, full.test, None)
    assert only_eight.any() and (~only_eight).any()
    np.testing.assert_allclose(values[~only_eight], main_only[~only_eight], atol=1e-4)
    # the eight source differs from the main one beyond the 1e-4 tolerance above
    assert np.abs(values[only_eight] - main_only[only_eight]).mean() > 1e-3
    manifest = result.manifest
    assert manifest.subset_source["id"] == eight.run_id
    assert manifest.runs == [full.run_id, eight.run_id]
    assert manifest.settings["images_from_subset"] > 0
    # the split is facial-keypoints' [submit_split]: its tag names the file, its subset the CV
    assert result.path.name.endswith(f"-{full.run_id}+8-{eight.run_id}.csv")
    assert manifest.subset == "eight"
    assert manifest.cv["eight"] == eight.manifest.cv["per_group"]["eight"]
    summary = submission_summary(result)
    assert f"images that ask only for the eight keypoints from run {eight.run_id}" in summary
    # a competition without a [submit_split] has no second source to take
    unsplit = dataclasses.replace(tiny, submit_split=None)
    with pytest.raises(KitError, match="declares no subset whose images may take a second"):
        make_submission(unsplit, full.run_id, subset_source=eight.run_id)
    alone = make_submission(unsplit, full.run_id)
    assert alone.manifest.subset_source is None and alone.manifest.subset is None
    assert list(alone.manifest.cv) == ["source"] and "+" not in alone.path.name

    # By default the eight source is whichever source scores best on the eight keypoints.
    auto = make_submission(tiny, full.run_id)
    scores = {r.run_id: r.manifest.cv["per_group"]["eight"] for r in (full, eight)}
    best = min(scores, key=scores.get)
    chosen = auto.manifest.subset_source
    assert (chosen and chosen["id"]) == (None if best == full.run_id else best)
    with pytest.raises(KitError, match="predicts 4 of 15 keypoints"):
        make_submission(tiny, eight.run_id)


def test_the_default_source_is_never_a_run_of_only_some_folds(tiny: Competition) -> None:
    partial = tiny_run(tiny, folds=1, overrides={"lr": 0.05})  # like a tuning trial
    with pytest.raises(KitError, match="predicts every keypoint"):
        make_submission(tiny)
    full = tiny_run(tiny)
    assert make_submission(tiny).manifest.source["id"] == full.run_id
    named = make_submission(tiny, partial.run_id, subset_source="none")  # named: allowed
    assert named.manifest.source["id"] == partial.run_id


def test_no_source_and_a_stale_source_are_clear_errors(tiny: Competition, tmp_path: Path) -> None:
    with pytest.raises(KitError, match="no finished run or stack of tiny-fkd predicts every"):
        make_submission(tiny)
    run = tiny_run(tiny)
    with pytest.raises(KitError, match="no finished run or stack 'nope'"):
        make_submission(tiny, "nope")
    source = tiny.plugin.write_example(tmp_path / "other", tiny, 60, 12, seed=5)
    fetch(tiny, source)  # new test images: the run's test predictions no longer fit
    with pytest.raises(DataError, match=f"run {run.run_id} predicted another test split"):
        make_submission(tiny, run.run_id)


# ------------------------------------------------------------------------- uploads


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    policy = RetryPolicy(attempts=3, base_delay=1.0, sleep=recorded.append, jitter=lambda: 1)
    monkeypatch.setattr(kit.kaggle, "RETRY", policy)
    return recorded


@pytest.fixture
def server(kaggle_server: FakeKaggle, tiny: Competition) -> FakeKaggle:
    kaggle_server.add_competition(tiny.kaggle_slug, b"")
    return kaggle_server


def test_upload_records_the_ref_kaggle_returns(
    tiny: Competition, server: FakeKaggle, sleeps: list[float]
) -> None:
    tiny_run(tiny)
    result = make_submission(tiny, dry_run=False, message="kit test")
    assert result.uploaded and result.kaggle_ref > 0
    assert server.received[result.kaggle_ref] == result.path.read_bytes()
    (create,) = server.calls("CreateSubmission")
    assert create.body["submissionDescription"] == "kit test"
    on_disk = json.loads(result.manifest_path.read_text())
    assert on_disk["uploaded"] is True and on_disk["kaggle_ref"] == result.kaggle_ref
    assert on_disk["upload_error"] is None and on_disk["dry_run"] is False
    assert sleeps == []


def test_429_then_success_is_retried_and_uploaded(
    tiny: Competition, server: FakeKaggle, sleeps: list[float]
) -> None:
    tiny_run(tiny)
    server.fail("StartSubmissionUpload", 429, times=1, retry_after="2")
    result = make_submission(tiny, dry_run=False)
    assert result.uploaded and sleeps == [2.0]
    assert list(server.received) == [result.kaggle_ref]


@pytest.mark.parametrize(
    ("method", "status", "text", "expected"),
    [
        ("CreateSubmission", 400, "Submission limit reached for today", "daily submission limit"),
        ("StartSubmissionUpload", 403, "", "accept the competition's rules"),
        ("Upload", 403, "", "Could not submit to competition"),
        ("StartSubmissionUpload", 429, "", "rate limited by Kaggle, HTTP 429 after 3 attempt"),
    ],
    ids=["daily-limit", "rules-not-accepted", "upload-failure", "429-every-time"],
)
def test_a_refused_upload_is_never_marked_uploaded(
    tiny: Competition,
    submissions: Path,
    server: FakeKaggle,
    sleeps: list[float],
    method: str,
    status: int,
    text: str,
    expected: str,
) -> None:
    tiny_run(tiny)
    server.fail(method, status, times=3, message=text)
    with pytest.raises(KaggleError, match=expected) as excinfo:
        make_submission(tiny, dry_run=False)
    assert "not uploaded; the file is kept" in str(excinfo.value)
    assert "\n" not in str(excinfo.value)
    (manifest_path,) = (submissions / TINY_NAME).glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["uploaded"] is False and manifest["kaggle_ref"] is None
    assert expected.split(" after")[0] in manifest["upload_error"]
    assert server.received == {}
    assert Path(manifest["csv"]).is_file()  # the file survives for a later upload


def test_submit_cli_dry_run_upload_and_errors(
    tiny: Competition, server: FakeKaggle, sleeps: list[float], cli
) -> None:
    run = tiny_run(tiny)
    dry = cli("submit", TINY_NAME, "--dry-run", "--subset-from", "none")
    assert dry.code == 0, dry.err
    assert "dry run: not uploaded" in dry.out and run.run_id in dry.out
    assert server.calls("CreateSubmission") == []
    uploaded = cli("submit", TINY_NAME, "-m", "from the cli")
    assert uploaded.code == 0, uploaded.err
    assert "uploaded: Kaggle ref 1000" in uploaded.out
    server.fail("CreateSubmission", 400, message="Submission limit reached for today")
    refused = cli("submit", TINY_NAME)
    assert refused.code == 3
    assert "daily submission limit" in refused.err and len(refused.err.strip().splitlines()) == 1
    unknown = cli("submit", TINY_NAME, "--from", "nope", "--dry-run")
    assert unknown.code == 1 and "no finished run or stack 'nope'" in unknown.err
