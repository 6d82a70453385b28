"""`kit folds`: grouped, stratified, deterministic folds and their validation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData, identity_transforms
from kit.data.duplicates import find_duplicates
from kit.data.folds import (
    FOLDS_VERSION,
    comp_anchors,
    load_folds,
    make_folds,
    runs_on_other_folds,
    write_folds,
)
from kit.data.identity import pair_precision_recall
from kit.data.synthetic import fkd15_from_68, make_faces, make_people
from kit.errors import DataError
from kit.store.manifests import RunManifest

N = 150
PHOTO_ROWS = 60  # rows 0..59 come three to a photo (source groups photo_0..photo_19)


def brighter_noisy(img: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 3, img.shape)
    return np.clip(np.round(img.astype(float) + 10 + noise), 0, 255).astype(np.uint8)


def folds_data(ids: np.ndarray | None = None) -> KeypointData:
    """150 faces: 20 photos of 3 faces, copies across groups, 40% complete rows."""
    images, points = make_faces(N, seed=11)
    images[120] = images[1]  # exact copy of a face of photo_0
    images[100] = brighter_noisy(images[61], seed=0)  # near copy of a single-face photo
    images[130] = brighter_noisy(images[4], seed=1)  # near copy of a face of photo_1
    keypoints = fkd15_from_68(points).astype(np.float32)
    incomplete = np.random.default_rng(12).random(N) > 0.4
    keypoints[np.ix_(incomplete, [2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13])] = np.nan
    ids = np.arange(N, dtype=np.int64) if ids is None else ids
    groups = np.array([f"photo_{i // 3}" if i < PHOTO_ROWS else f"single_{i}" for i in range(N)])
    return KeypointData(images, keypoints, ids, groups, identity_transforms(N))


@pytest.fixture
def fkd() -> Competition:
    return load_competition("facial-keypoints")


def test_rows_that_belong_together_share_a_fold() -> None:
    data = folds_data()  # the drawn faces are all one "person": group by duplicates here
    frame = make_folds(data, k=5, seed=0, group_by="duplicates")
    folds = frame["fold"].to_numpy()
    assert list(frame.columns) == ["id", "fold", "group"]
    assert np.array_equal(frame["id"], data.ids)
    assert set(folds.tolist()) == set(range(5))

    for rows in ([0, 1, 2, 120], [3, 4, 5, 130], [61, 100]):  # source groups joined by copies
        assert len(set(folds[rows])) == 1
        assert len(set(frame["group"][rows])) == 1
    for photo in np.unique(data.groups):
        assert len(set(folds[data.groups == photo])) == 1
    found = find_duplicates(data.images)
    assert len(found.groups) == 3
    for rows in found.groups:
        assert len(set(folds[rows])) == 1
    assert frame["group"].nunique() == N - 40 - 3  # photos merge 2 rows each, copies 1 each


def test_folds_balance_rows_and_complete_share() -> None:
    data = folds_data()
    frame = make_folds(data, k=5, seed=0, group_by="duplicates")
    per_fold = pd.DataFrame({"fold": frame["fold"], "complete": data.complete})
    table = per_fold.groupby("fold")["complete"].agg(["size", "mean"])
    assert table["size"].max() - table["size"].min() <= 3  # groups hold up to 4 rows
    overall = data.complete.mean()
    assert np.abs(table["mean"] - overall).max() < 0.04


def test_folds_are_deterministic_for_a_seed() -> None:
    data = folds_data()
    first = make_folds(data, k=5, seed=7, group_by="duplicates")["fold"]
    assert np.array_equal(first, make_folds(data, k=5, seed=7, group_by="duplicates")["fold"])
    other = make_folds(data, k=5, seed=8, group_by="duplicates")["fold"]
    assert (first != other).mean() > 0.3


def test_write_folds_is_a_no_op_when_nothing_changed(fkd: Competition) -> None:
    folds_data().save(fkd.workspace.train_npz)
    first = write_folds(fkd, k=4, seed=3)
    assert first.written
    stamp = first.path.stat().st_mtime_ns
    again = write_folds(fkd, k=4, seed=3)
    assert not again.written
    assert first.path.stat().st_mtime_ns == stamp
    assert np.array_equal(again.folds["fold"], first.folds["fold"])
    assert again.table.equals(first.table)
    assert list(first.table.columns) == ["fold", "rows", "complete", "complete_share", "groups"]
    assert first.table["rows"].sum() == N

    assert write_folds(fkd, k=4, seed=4).written  # another seed
    assert write_folds(fkd, k=3, seed=4).written  # another k
    folds_data(ids=np.arange(N, dtype=np.int64) + 1000).save(fkd.workspace.train_npz)
    assert write_folds(fkd, k=3, seed=4).written  # other data


def test_load_folds_checks_the_file_against_the_cache(fkd: Competition) -> None:
    ids = np.array([f"helen/trainset/{i:04d}_1.jpg" for i in range(N)])  # ibug-like string ids
    data = folds_data(ids)
    with pytest.raises(DataError, match="run `kit folds facial-keypoints` first"):
        load_folds(fkd, data)
    data.save(fkd.workspace.train_npz)
    written = write_folds(fkd, k=5, seed=0)
    assert np.array_equal(load_folds(fkd, data), written.folds["fold"])

    reordered = data.subset(np.arange(N)[::-1])
    rerun = r"re-run `kit folds facial-keypoints --k 5 --seed 0 .*--force`"
    with pytest.raises(DataError, match=r"stale: row 0 .*" + rerun):
        load_folds(fkd, reordered)
    with pytest.raises(DataError, match="has 150 rows but the cached train data has 149"):
        load_folds(fkd, data.subset(np.arange(N - 1)))


def test_a_stale_folds_file_names_its_ids_as_plain_values(fkd: Competition) -> None:
    data = folds_data()  # integer ids, as FKD's
    data.save(fkd.workspace.train_npz)
    write_folds(fkd, k=3, seed=0)
    with pytest.raises(DataError) as caught:
        load_folds(fkd, data.subset(np.arange(N)[::-1]))
    message = str(caught.value)
    assert "stale: row 0 has id 0, the cached train data has 149 (" in message
    assert "np." not in message


def test_error_messages_print_numpy_values_plainly() -> None:
    values = (np.int64(0), np.float32(1.5), np.str_("a.jpg"), np.True_)
    error = DataError(f"values {values!r} and {[np.uint8(7)]}", path="x.csv")
    assert str(error) == "x.csv: values (0, 1.5, 'a.jpg', True) and [7]"


def test_k_larger_than_the_number_of_groups(fkd: Competition, cli) -> None:
    images, points = make_faces(6, seed=13)
    groups = np.array(["a", "a", "a", "b", "b", "b"])
    ids = np.arange(6, dtype=np.int64)
    keypoints = fkd15_from_68(points).astype(np.float32)
    KeypointData(images, keypoints, ids, groups, identity_transforms(6)).save(
        fkd.workspace.train_npz
    )
    with pytest.raises(DataError, match="k=5 is more than the 2 groups"):
        write_folds(fkd, k=5, group_by="duplicates")
    result = cli("folds", "facial-keypoints", "--k", "3", "--group-by", "duplicates")
    assert result.code != 0
    assert "\n" not in result.err.strip()
    assert "--k 2 or fewer" in result.err
    assert not fkd.workspace.folds_csv.exists()


def test_cli_writes_then_reports_up_to_date(fkd: Competition, cli) -> None:
    folds_data().save(fkd.workspace.train_npz)
    result = cli("folds", "facial-keypoints", "--k", "5", "--seed", "2")
    assert result.code == 0, result.err
    assert "wrote" in result.out and "complete_share" in result.out
    frame = pd.read_csv(fkd.workspace.folds_csv)
    assert frame["fold"].between(0, 4).all() and len(frame) == N
    again = cli("folds", "facial-keypoints", "--k", "5", "--seed", "2")
    assert again.code == 0 and "up to date" in again.out


def test_cli_without_cache_says_run_fetch(cli) -> None:
    result = cli("folds", "facial-keypoints")
    assert result.code != 0
    assert "train.npz" in result.err and "kit fetch" in result.err


def test_an_older_folds_file_is_kept_until_the_user_asks(fkd: Competition, cli) -> None:
    """Folds from before identity grouping stay (runs on them stay comparable) with a note;
    --force or another --group-by rebuilds them, and folds.json says how they were made."""
    folds_data().save(fkd.workspace.train_npz)
    old = write_folds(fkd, k=4, seed=1, group_by="duplicates")
    meta_path = fkd.workspace.folds_csv.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    for key in ("group_by", "identity"):
        meta.pop(key, None)
    meta["version"] = 1  # as kit wrote it before identity grouping
    meta_path.write_text(json.dumps(meta))

    kept = write_folds(fkd)
    assert not kept.written and (kept.k, kept.seed, kept.group_by) == (4, 1, "duplicates")
    assert np.array_equal(kept.folds["fold"], old.folds["fold"])
    assert "older grouping (duplicates" in kept.outdated and "--force" in kept.outdated
    shown = cli("folds", "facial-keypoints")
    assert shown.code == 0 and "kit folds --force" in " ".join(shown.out.split())

    rebuilt = write_folds(fkd, force=True)
    assert rebuilt.written and rebuilt.outdated is None
    assert (rebuilt.k, rebuilt.seed, rebuilt.group_by) == (5, 0, "identity")
    meta = json.loads(meta_path.read_text())
    assert meta["group_by"] == "identity" and meta["version"] == FOLDS_VERSION
    assert meta["identity"]["false_matches"] > 0  # the identity settings it used
    assert meta["identity"]["embedder_used"] == "hand-made"  # no face net in this test
    assert not write_folds(fkd).written  # now current: kept
    assert write_folds(fkd, group_by="duplicates").written  # another grouping asked for


def test_runs_on_other_folds_are_named(fkd: Competition) -> None:
    folds_data().save(fkd.workspace.train_npz)
    write_folds(fkd, k=3, group_by="duplicates")
    current = json.loads(fkd.workspace.folds_csv.with_suffix(".json").read_text())
    for run_id, sha in (("old-run", "0" * 64), ("new-run", current["folds_sha256"])):
        RunManifest(
            run_id, "facial-keypoints", "lenet", {}, "masked", {}, [], [], "rmse", 0,
            {"sha256": sha, "trained": [0, 1, 2]}, {}, {"overall": 1.0}, {}, {}, {}, 1.0, "code",
        ).write(fkd.workspace.runs / run_id / "manifest.json")  # fmt: skip
    assert runs_on_other_folds(fkd) == ["old-run"]


def test_identity_folds_keep_each_person_in_one_fold(fkd: Competition) -> None:
    """Drawn people with varied pose and lighting: the folds file groups them by person (as
    the grouping finds them) and never splits a group across folds."""
    images, points, people = make_people(16, 8, seed=5)
    keypoints = fkd15_from_68(points).astype(np.float32)
    keypoints[1::2, 2:10] = np.nan  # FKD's missingness: eye corners and brows of half the rows
    ids = np.arange(len(images), dtype=np.int64)
    KeypointData.whole_images(images, keypoints, ids).save(fkd.workspace.train_npz)
    made = write_folds(fkd, k=4)
    assert made.group_by == "identity"
    frame = made.folds
    assert (frame.groupby("group")["fold"].nunique() == 1).all()
    scores = pair_precision_recall(frame["group"].to_numpy(), people)
    assert scores.precision >= 0.9 and scores.recall >= 0.8
    same_person_same_fold = pair_precision_recall(frame["fold"].to_numpy(), people).recall
    assert same_person_same_fold >= 0.9  # by duplicates alone it would be about 1/k
    by_duplicates = make_folds(KeypointData.load(fkd.workspace.train_npz), 4, 0, "duplicates")
    assert pair_precision_recall(by_duplicates["fold"].to_numpy(), people).recall < 0.5


def test_bad_grouping_and_bad_anchors_fail_in_one_line(fkd: Competition, cli) -> None:
    folds_data().save(fkd.workspace.train_npz)
    result = cli("folds", "facial-keypoints", "--group-by", "faces")
    assert result.code != 0 and "\n" not in result.err.strip()
    assert "--group-by faces: unknown" in result.err and "identity or duplicates" in result.err
    wrong = dataclasses.replace(
        fkd, options={**fkd.options, "identity_anchors": {"left_eye": ["no_such_point"]}}
    )
    with pytest.raises(DataError, match=r"competition.toml: identity_anchors: unknown keypoint"):
        comp_anchors(wrong)
    assert not fkd.workspace.folds_csv.exists()
