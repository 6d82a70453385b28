"""Duplicates (pHash + pixel check + union-find) and `kit eda` on synthetic faces."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.competition import Competition, load_competition
from kit.data import duplicates as dup
from kit.data.arrays import KeypointData
from kit.data.eda import TRUTH_COLOUR, procrustes_outliers, run_eda, tile_size
from kit.data.folds import write_folds
from kit.data.synthetic import fkd15_from_68, make_faces, make_people

EIGHT = ["left_eye_center", "right_eye_center", "nose_tip", "mouth_center_bottom_lip"]


def brighter(img: np.ndarray, by: int = 10) -> np.ndarray:
    return np.clip(img.astype(int) + by, 0, 255).astype(np.uint8)


def shifted(img: np.ndarray, dx: int = 1, dy: int = 0) -> np.ndarray:
    """Content moved right/down by dx/dy pixels, edge replicated."""
    h, w = img.shape
    padded = np.pad(img, ((abs(dy),) * 2, (abs(dx),) * 2), mode="edge")
    return padded[abs(dy) - dy : abs(dy) - dy + h, abs(dx) - dx : abs(dx) - dx + w]


def noisy(img: np.ndarray, sd: float = 3.0, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sd, img.shape)
    return np.clip(np.round(img + noise), 0, 255).astype(np.uint8)


def lightly_changed(img: np.ndarray, seed: int = 0) -> np.ndarray:
    return noisy(shifted(brighter(img)), seed=seed)


def fkd_split(images: np.ndarray, points68: np.ndarray | None, first_id: int = 0) -> KeypointData:
    n = len(images)
    keypoints = (
        fkd15_from_68(points68).astype(np.float32)
        if points68 is not None
        else np.full((n, 15, 2), np.nan, np.float32)
    )
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    return KeypointData.whole_images(images, keypoints, ids)


# ---- duplicates --------------------------------------------------------------------------------


def test_exact_near_and_chained_copies_are_grouped() -> None:
    faces, _ = make_faces(30, seed=1)
    step1 = shifted(faces[10], dx=1)
    step2 = shifted(step1, dx=1, dy=1)  # 2 px right and 1 down of the original: only via step1
    assert dup.shift_correlation(faces[10:11], step2[None])[0] < dup.MIN_CORRELATION
    extra = np.stack([faces[3], lightly_changed(faces[7]), step1, step2])
    found = dup.find_duplicates(np.concatenate([faces, extra]))

    groups = {
        tuple(rows.tolist()): exact for rows, exact in zip(found.groups, found.exact, strict=True)
    }
    assert groups == {(10, 32, 33): False, (3, 30): True, (7, 31): False}
    assert found.labels[10] == found.labels[33] != found.labels[7]
    assert len(np.unique(found.labels)) == 30  # every other face keeps a label of its own


def test_distinct_faces_are_not_grouped() -> None:
    faces, _ = make_faces(120, seed=2)
    found = dup.find_duplicates(faces)
    assert found.groups == []
    assert np.array_equal(np.sort(found.labels), np.arange(120))


def test_threshold_margin_on_synthetic_faces() -> None:
    """The measurement behind CANDIDATE_BITS and MIN_CORRELATION (see duplicates.py)."""
    faces, _ = make_faces(50, seed=3)
    copies = np.stack([lightly_changed(f, seed=i) for i, f in enumerate(faces)])
    bits = dup.popcount(dup.phash(faces) ^ dup.phash(copies))
    assert bits.max() <= dup.CANDIDATE_BITS
    assert dup.shift_correlation(faces, copies).min() >= dup.MIN_CORRELATION + 0.003
    i, j = np.triu_indices(len(faces), 1)
    assert dup.shift_correlation(faces[i], faces[j]).max() <= dup.MIN_CORRELATION - 0.003


def test_close_pairs_matches_brute_force() -> None:
    hashes = np.random.default_rng(0).integers(0, 2**63, 300, dtype=np.uint64)
    hashes[50] = hashes[7] ^ np.uint64(0b1011)  # 3 bits from row 7
    i, j = dup.close_pairs(hashes, threshold=28, chunk=64)
    bits = np.array([[bin(int(a) ^ int(b)).count("1") for b in hashes] for a in hashes])
    want_i, want_j = np.nonzero(np.triu(bits <= 28, 1))
    found = set(zip(i.tolist(), j.tolist(), strict=True))
    assert len(found) == len(i)  # no pair twice
    assert found == set(zip(want_i.tolist(), want_j.tolist(), strict=True))
    assert (7, 50) in found


def test_popcount_lookup_table_agrees() -> None:
    x = np.random.default_rng(1).integers(0, 2**63, 1000, dtype=np.uint64)
    lut = dup._POPCOUNT_8[x[..., None].view(np.uint8)].sum(-1)
    assert np.array_equal(dup.popcount(x), lut)
    assert dup.popcount(np.array([2**64 - 1], np.uint64))[0] == 64


def test_connected_labels_is_transitive() -> None:
    labels = dup.connected_labels(9, np.array([0, 1, 5, 2, 8]), np.array([1, 2, 6, 7, 8]))
    assert labels.tolist() == [0, 0, 0, 1, 2, 3, 3, 0, 4]


# ---- eda ---------------------------------------------------------------------------------------


@pytest.fixture
def fkd() -> Competition:
    return load_competition("facial-keypoints")


def known_pattern_train(comp: Competition) -> KeypointData:
    """30 rows: 10 complete, 15 'eight', 3 without nose_tip, 1 half-missing point, 1 empty."""
    images, points = make_faces(30, seed=4)
    data = fkd_split(images, points)
    kp = data.keypoints
    not_eight = [i for i in range(15) if i not in comp.subset_indices("eight")]
    kp[10:25, not_eight] = np.nan
    kp[25:28, comp.keypoint_names.index("nose_tip")] = np.nan
    kp[28, 0, 0] = np.nan  # only x of left_eye_center: the keypoint counts as missing
    kp[29] = np.nan
    return data


def save_splits(comp: Competition, train: KeypointData, test: KeypointData) -> None:
    train.save(comp.workspace.train_npz)
    test.save(comp.workspace.test_npz)


def test_missing_and_pattern_tables_are_exact(fkd: Competition) -> None:
    train = known_pattern_train(fkd)
    test = fkd_split(make_faces(5, seed=5)[0], None, first_id=1)
    save_splits(fkd, train, test)
    report = run_eda(fkd, top=6)

    missing = report.missing.set_index("keypoint")["missing"]
    expected = {name: 16 for name in fkd.keypoint_names}  # 15 'eight' rows + the empty row
    expected.update({"left_eye_center": 2, "right_eye_center": 1, "nose_tip": 4})
    expected["mouth_center_bottom_lip"] = 1
    assert missing.to_dict() == expected
    pct = report.missing.set_index("keypoint")["missing_pct"]
    assert pct["nose_tip"] == pytest.approx(100 * 4 / 30)

    patterns = {
        (v, p): r for v, p, r in report.patterns[["present_values", "pattern", "rows"]].values
    }
    assert patterns == {
        (30, "all"): 10,
        (8, "eight"): 15,
        (28, "other"): 3,
        (29, "other"): 1,
        (0, "none"): 1,
    }
    assert report.patterns["share_pct"].sum() == pytest.approx(100)
    on_disk = pd.read_csv(report.paths["missing"])
    assert on_disk["missing"].tolist() == [expected[n] for n in fkd.keypoint_names]
    assert report.counts["complete_rows"] == 10
    assert report.counts["scored_rows"] == 29  # the empty row has no score


def test_injected_outliers_rank_first() -> None:
    _, points = make_faces(60, seed=6)
    kp = fkd15_from_68(points)
    kp[40:] = np.nan
    kp[40:, [0, 1, 10, 14]] = fkd15_from_68(points[40:])[:, [0, 1, 10, 14]]  # 'eight' rows
    kp[5] = kp[5][np.random.default_rng(0).permutation(15)]  # labels in the wrong order
    kp[45, 10] += (0.0, 12.0)  # nose tip 12 px too low, in a row with only 4 points
    scores = procrustes_outliers(kp)["score"].to_numpy()
    assert set(np.argsort(-scores)[:2].tolist()) == {5, 45}
    typical = np.median(scores)
    assert scores[5] > 5 * typical and scores[45] > 3 * typical


def test_incomplete_rows_do_not_bias_the_mean_shape() -> None:
    """Complete rows score the same with or without many 'eight'-only rows beside them."""
    _, points = make_faces(200, seed=10)
    kp = fkd15_from_68(points)
    alone = procrustes_outliers(kp[:60])["score"].to_numpy()
    mixed = kp.copy()
    mixed[60:, [2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13]] = np.nan
    together = procrustes_outliers(mixed)["score"].to_numpy()
    assert np.allclose(together[:60], alone, rtol=0.1)
    # 4 points leave 4 residual degrees of freedom, 15 leave 26: similar scales after correction
    assert 0.5 < np.median(together[60:]) / np.median(alone) < 2


def test_outlier_score_is_similarity_invariant() -> None:
    _, points = make_faces(20, seed=7)
    kp = fkd15_from_68(points).astype(np.float64)
    angle, scale, move = 0.4, 1.7, np.array([13.0, -4.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = kp.copy()
    moved[3] = kp[3] @ rot.T + move
    before = procrustes_outliers(kp)["score"].to_numpy()
    after = procrustes_outliers(moved)["score"].to_numpy()
    assert after[3] == pytest.approx(before[3], rel=1e-6)
    assert np.allclose(np.delete(after, 3), np.delete(before, 3), rtol=1e-6)


def test_duplicates_and_contact_sheets(fkd: Competition) -> None:
    images, points = make_faces(40, seed=8)
    train_images = images[:32].copy()
    train_images[31] = train_images[4]  # exact duplicate inside train
    test_images = images[32:].copy()
    test_images[0] = lightly_changed(train_images[9])  # a train face leaked into test
    train = fkd_split(train_images, points[:32])
    train.keypoints[20] = train.keypoints[20][::-1]  # keypoints in reverse order
    save_splits(fkd, train, fkd_split(test_images, None, 1))

    top = 8
    report = run_eda(fkd, top=top)
    groups = report.duplicate_groups
    assert sorted(zip(groups["kind"], groups["train"], groups["test"], strict=True)) == [
        ("exact", 2, 0),
        ("near", 1, 1),
    ]
    assert report.counts["train_test_groups"] == 1
    members = report.duplicate_members
    leaked = members[members["kind"] == "near"]
    assert sorted(zip(leaked["split"], leaked["id"], strict=True)) == [("test", 1), ("train", 9)]

    width, height = tile_size(96)
    assert width == 192
    expected = {
        "outliers_png": (6 * width, math.ceil(top / 6) * height),
        "duplicates_png": (2 * width, 2 * height),  # two groups of two
    }
    for key, size in expected.items():
        with Image.open(report.paths[key]) as picture:
            pixels = np.asarray(picture.convert("RGB")).astype(int)
        assert pixels.shape[1::-1] == size
        assert pixels.std() > 20  # faces, not a blank canvas
        blue = np.all(np.abs(pixels - TRUTH_COLOUR) < 8, axis=2)
        assert blue.sum() > 15 * 9  # at least one face's 15 keypoints drawn in blue
    assert len(report.outliers) == top
    assert report.outliers["row"][0] == 20
    assert report.outliers["relative"].is_monotonic_decreasing


def test_cli_prints_summary(fkd: Competition, cli) -> None:
    save_splits(fkd, known_pattern_train(fkd), fkd_split(make_faces(4, seed=9)[0], None, 1))
    result = cli("eda", "facial-keypoints", "--top", "5")
    assert result.code == 0, result.err
    for text in (
        "Missing keypoints",
        "nose_tip",
        "eight",
        "Duplicate groups (train+test): 0 ",
        "label outliers",
        "outliers.png",
    ):
        assert text in result.out
    assert (fkd.workspace.eda / "summary.json").is_file()


def test_cli_without_cache_says_run_fetch(cli) -> None:
    result = cli("eda", "facial-keypoints")
    assert result.code != 0
    message = result.err.strip()
    assert "\n" not in message
    assert "train.npz" in message and "kit fetch" in message


def test_identity_groups_are_counted_and_drawn(fkd: Competition, cli) -> None:
    images, points, _people = make_people(16, 8, seed=3)
    train = fkd_split(images, points)
    save_splits(fkd, train, fkd_split(make_faces(4, seed=9)[0], None, 1))
    report = run_eda(fkd, top=5)
    table = report.identity_groups
    assert table["rows"].sum() == len(train) and table["rows"].is_monotonic_decreasing
    assert report.counts["identity_groups"] == len(table) and 10 <= len(table) <= 24
    assert report.identity_source.startswith("grouped now")
    with Image.open(report.paths["identity_groups_png"]) as picture:
        width, height = tile_size(96)
        assert picture.size == (6 * width, 12 * height)  # the 12 largest groups, 6 faces each
    write_folds(fkd)  # identity folds: eda now reads their groups
    assert run_eda(fkd).identity_source == "the folds file"
    result = cli("eda", "facial-keypoints")
    assert result.code == 0 and "Identity groups (train, the folds file)" in result.out
