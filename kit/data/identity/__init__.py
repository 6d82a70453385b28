"""Identity groups: rows that show the same person get one label, so a person's frames share a fold.

No face model is available offline, so identity comes from the images and keypoints alone:

1. Align: a similarity transform per row maps its anchor points (eyes, nose, mouth; each
   competition names its own, see Anchors) onto their Procrustes mean shape; a row with one
   anchor keeps the median rotation and scale, a row with none the median transform. With a
   nose or mouth anchor, a piecewise-linear warp then moves the anchors exactly onto the mean
   shape (a cheap frontalisation that undoes much of a head turn and an open mouth).
2. Describe: HOG and uniform-LBP histograms (soft spatial binning) of the aligned patch, which
   leans towards brows, eyes and hair, and of its mirror image, averaged (a face turned left
   then matches the same face turned right); square roots (Hellinger).
3. Embed: PCA whitening fit on the same rows, then nuisance attribute projection: the few
   directions best predicted by the pose and expression read off the aligned anchors are
   projected out; otherwise turned heads group with turned heads.
4. Score: cosine similarity, normalised per row by the median and MAD of that row's similarities
   to the others (symmetric S-norm). Different people then score close to N(0, 1), so the
   threshold can be set from the number of rows (threshold_for): as many chance matches per
   row at any N.
5. Group: average-linkage clustering cut at the threshold (no single-linkage chaining into giant
   groups); then the groups' within-group covariance whitens the embedding (what changes within
   a person counts less) and the clustering runs again.

Measured by benchmarks/identity_calibration.py. IMM (32 people x 6 shots: pose up to 30 degrees,
expression, lighting; FKD-like crops with FKD's 4 keypoints): pairwise precision 0.97, recall
0.87. fkd-proxy (2449 frames of 203 people from YouTube videos): 634 groups with an estimated
precision of 0.93; the groups are mostly one video each (4 frames), as matching one person
across videos (other day, light, camera) is beyond hand-made features. Limits: with few people
(under ~15) the whitening cannot learn the face space and people split (precision holds); rows
from two visibly different sources make the minority source's strangers look alike.

Modules: _settings (IdentitySettings), _align (step 1: anchors, similarity fit, warp),
_describe (2: HOG, LBP), _embed (3: whitening, pose projection, within-group whitening),
_cluster (4 and 5: S-norm, average linkage, threshold), _evaluate (pairwise precision and
recall); embeddings and identity_groups chain them here.
"""

from __future__ import annotations

import numpy as np

from kit.data.identity._align import (
    FKD15_ANCHORS,
    Alignment,
    Anchors,
    align,
    aligned_patches,
    anchor_points,
)
from kit.data.identity._cluster import (
    Dendrogram,
    cluster,
    dendrogram,
    group_embeddings,
    similarity_z,
    threshold_for,
)
from kit.data.identity._describe import describe
from kit.data.identity._embed import embed, nuisance, within_whiten
from kit.data.identity._evaluate import PairScores, pair_precision_recall
from kit.data.identity._settings import DEFAULT_FALSE_MATCHES, IdentitySettings

__all__ = [
    "DEFAULT_FALSE_MATCHES",
    "FKD15_ANCHORS",
    "Alignment",
    "Anchors",
    "Dendrogram",
    "IdentitySettings",
    "PairScores",
    "align",
    "aligned_patches",
    "anchor_points",
    "cluster",
    "dendrogram",
    "describe",
    "embed",
    "embeddings",
    "group_embeddings",
    "identity_groups",
    "nuisance",
    "pair_precision_recall",
    "similarity_z",
    "threshold_for",
    "within_whiten",
]


def embeddings(
    images: np.ndarray,
    keypoints: np.ndarray,
    anchors: Anchors | None = None,
    settings: IdentitySettings | None = None,
) -> np.ndarray:
    """(N, k) unit-length identity embeddings (align, describe, embed)."""
    settings = settings or IdentitySettings()
    alignment = align(keypoints, anchors)
    patches = aligned_patches(images, alignment, settings)
    return embed(describe(patches, settings), settings, nuisance(alignment))


def identity_groups(
    images: np.ndarray,
    keypoints: np.ndarray,
    anchors: Anchors | None = None,
    settings: IdentitySettings | None = None,
) -> np.ndarray:
    """(N,) identity labels 0..G-1 for uint8 (N, S, S) images with (N, K, 2) keypoints."""
    settings = settings or IdentitySettings()
    n = len(images)
    if n < 3:
        return np.arange(n, dtype=np.int64)
    threshold = settings.threshold
    if threshold is None:
        threshold = threshold_for(n, settings.false_matches)
    return group_embeddings(embeddings(images, keypoints, anchors, settings), threshold, settings)
