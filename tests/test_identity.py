"""Identity groups (kit.data.identity) on synthetic people: recovery, alignment with missing
keypoints, determinism, and the pairwise precision/recall count."""

from __future__ import annotations

import numpy as np
import pytest

from kit.data import identity
from kit.data.identity import FKD15_ANCHORS, IdentitySettings
from kit.data.synthetic import fkd15_from_68, make_people

SPARSE = [2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13]  # what FKD's 4-keypoint rows lack


@pytest.fixture(scope="module")
def people() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """16 people x 8 faces: images, FKD keypoints (every other row keeps only FKD's 4), the
    68 landmarks, person labels. Many people, few faces each, as in real data: the whitening
    learns the face space from the rows, and a handful of people cannot span it."""
    images, points, person = make_people(16, 8, seed=3)
    keypoints = fkd15_from_68(points)
    keypoints[::2, SPARSE] = np.nan
    return images, keypoints, points, person


def test_pair_precision_recall_counts_pairs() -> None:
    scores = identity.pair_precision_recall(np.array([0, 0, 1, 1, 2]), np.array([0, 0, 0, 1, 1]))
    # same group: (0,1) (2,3); same person: (0,1) (0,2) (1,2) (3,4); both: (0,1)
    assert (scores.true_pairs, scores.group_pairs, scores.person_pairs) == (1, 2, 4)
    assert scores.precision == 0.5
    assert scores.recall == 0.25
    names = identity.pair_precision_recall(np.array([7, 7, 3]), np.array(["a", "a", "b"]))
    assert (names.precision, names.recall) == (1.0, 1.0)
    alone = identity.pair_precision_recall(np.arange(4), np.zeros(4))
    assert (alone.precision, alone.recall, alone.person_pairs) == (1.0, 0.0, 6)
    with pytest.raises(ValueError, match="rows"):
        identity.pair_precision_recall(np.zeros(3), np.zeros(4))


def test_groups_recover_synthetic_people(people) -> None:
    images, keypoints, _, person = people
    groups = identity.identity_groups(images, keypoints, FKD15_ANCHORS)
    scores = identity.pair_precision_recall(groups, person)
    assert scores.precision >= 0.9, scores
    assert scores.recall >= 0.8, scores
    # labels are 0..G-1, numbered in order of first row
    _, first = np.unique(groups, return_index=True)
    assert groups[np.sort(first)].tolist() == list(range(groups.max() + 1))


def test_grouping_is_deterministic(people) -> None:
    images, keypoints, _, _ = people
    a = identity.identity_groups(images, keypoints, FKD15_ANCHORS)
    b = identity.identity_groups(images.copy(), keypoints.copy(), FKD15_ANCHORS)
    np.testing.assert_array_equal(a, b)


def test_without_anchors_every_keypoint_aligns(people) -> None:
    images, _, points, person = people
    groups = identity.identity_groups(images, points, anchors=None)
    scores = identity.pair_precision_recall(groups, person)
    assert scores.precision >= 0.9 and scores.recall >= 0.8, scores


def test_alignment_handles_missing_keypoints(people) -> None:
    images, keypoints, _, _ = people
    kp = keypoints[:12].copy()
    kp[1] = keypoints[0]  # row 1: row 0's keypoints ...
    kp[1, SPARSE] = np.nan  # ... but only the 4 FKD keeps
    kp[2, 0] = np.nan  # one eye missing
    kp[3] = np.nan
    kp[3, 10] = keypoints[3, 10]  # only the nose
    kp[4] = np.nan  # no keypoints at all
    alignment = identity.align(kp, FKD15_ANCHORS)
    assert np.isfinite(alignment.params).all()
    assert np.isfinite(alignment.template).all()
    np.testing.assert_allclose(alignment.params[1], alignment.params[0], atol=1e-9)
    # one anchor: the typical rotation and scale, moved onto that anchor
    nose = 2
    a, b, tx, ty = alignment.params[3]
    mapped = np.array([[a, -b], [b, a]]) @ alignment.template[nose] + [tx, ty]
    np.testing.assert_allclose(mapped, kp[3, 10], atol=1e-6)
    # none: the median transform (the typical face position)
    fitted = np.setdiff1d(np.arange(12), [3, 4])
    rotation_scale = np.median(alignment.params[fitted, :2], 0)
    shift = np.median(alignment.params[np.setdiff1d(np.arange(12), [4]), 2:], 0)
    np.testing.assert_allclose(alignment.params[4], np.r_[rotation_scale, shift])
    settings = IdentitySettings()
    patches = identity.aligned_patches(images[:12], alignment, settings)
    assert patches.shape == (12, settings.patch, settings.patch)
    assert np.isfinite(patches).all()
    emb = identity.embeddings(images[:12], kp, FKD15_ANCHORS, settings)
    assert np.isfinite(emb).all()


def test_aligned_patch_puts_the_eyes_on_the_template(people) -> None:
    _, keypoints, _, _ = people
    alignment = identity.align(keypoints, FKD15_ANCHORS)
    full = ~np.isnan(keypoints).any(axis=(1, 2))
    # a row's eyes map to the template's eyes up to the similarity fit's residual
    eyes = alignment.aligned[full][:, :2]
    assert np.abs(eyes - alignment.template[:2]).max() < 3.0


def test_descriptor_is_mirror_invariant() -> None:
    rng = np.random.default_rng(0)
    patches = rng.uniform(0, 255, (3, 64, 64)).astype(np.float32)
    settings = IdentitySettings()
    plain = identity.describe(patches, settings)
    mirrored = identity.describe(np.ascontiguousarray(patches[:, :, ::-1]), settings)
    np.testing.assert_allclose(plain, mirrored, atol=1e-6)
    one_sided = identity.describe(patches, IdentitySettings(mirror=False))
    assert np.abs(one_sided - plain).max() > 1e-3


def test_threshold_grows_with_rows_and_tolerance_lowers_it() -> None:
    t = identity.threshold_for
    assert t(100) < t(1000) < t(10000)
    assert t(1000, 4.0) < t(1000, 1.0)


def test_tiny_inputs() -> None:
    images = np.zeros((2, 96, 96), np.uint8)
    keypoints = np.full((2, 15, 2), np.nan, np.float32)
    np.testing.assert_array_equal(identity.identity_groups(images, keypoints), [0, 1])
    assert identity.cluster(np.zeros((1, 1), np.float32), 0.0).tolist() == [0]
