"""Identity groups: rows that show the same person get one label, so a person's frames share a fold.

With the extra ``kit[faces]`` installed, a face-identity network describes each face
(_face_net: dlib's ResNet metric net, run in torch from dlib's weights, which _face_weights
finds and reads; _chips: each face similarity-warped into the net's chip frame from the
competition's eye and nose anchors), and Ward linkage cuts the 128-d descriptors at a
calibrated distance, near-identical frames counted once (_face_groups). It recovers people
across videos, days and cameras: IMM's 32 people exactly, fkd-proxy's 203 people as 267 groups
(the hand-made path: 634, mostly one video each; benchmarks/identity_face_net.py). Without it,
identity comes from the images and keypoints alone, by hand-made descriptors:

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

Modules: _settings (IdentitySettings), _face_weights, _face_net, _chips, _face_groups (the net),
_align (step 1: anchors, similarity fit, warp), _describe (2: HOG, LBP), _embed (3: whitening,
pose projection, within-group whitening), _cluster (4 and 5: S-norm, average linkage,
threshold), _evaluate (pairwise precision and recall); embeddings and identity_groups chain
them here.
"""

from __future__ import annotations

from dataclasses import dataclass

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
from kit.data.identity._face_groups import embedder_for, face_net_embeddings, ward_groups
from kit.data.identity._settings import (
    DEFAULT_FACE_NET_CUT,
    DEFAULT_FALSE_MATCHES,
    EMBEDDERS,
    IdentitySettings,
)

__all__ = [
    "DEFAULT_FACE_NET_CUT",
    "DEFAULT_FALSE_MATCHES",
    "EMBEDDERS",
    "FKD15_ANCHORS",
    "Alignment",
    "Anchors",
    "Dendrogram",
    "IdentityGrouping",
    "IdentitySettings",
    "PairScores",
    "align",
    "aligned_patches",
    "anchor_points",
    "cluster",
    "dendrogram",
    "describe",
    "embed",
    "embedder_for",
    "embeddings",
    "face_net_embeddings",
    "group_embeddings",
    "group_identities",
    "identity_groups",
    "nuisance",
    "pair_precision_recall",
    "similarity_z",
    "threshold_for",
    "ward_groups",
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


@dataclass(frozen=True)
class IdentityGrouping:
    """What identity grouping found: labels 0..G-1, the embedder that made them, and why the
    face net was passed over when "auto" had it and its groups were not plausible."""

    labels: np.ndarray
    embedder: str
    declined: str = ""


def group_identities(
    images: np.ndarray,
    keypoints: np.ndarray,
    anchors: Anchors | None = None,
    settings: IdentitySettings | None = None,
) -> IdentityGrouping:
    """Identity groups of uint8 (N, S, S) images with (N, K, 2) keypoints.

    Under "auto", face-net groups in which one group holds more than settings.face_net_max_share
    of the rows are set aside for the hand-made path: the net sees one person in faces it was
    not trained on (drawn or synthetic ones), and folds need several groups."""
    settings = settings or IdentitySettings()
    n = len(images)
    embedder = embedder_for(settings, anchors)
    if n < 3:
        return IdentityGrouping(np.arange(n, dtype=np.int64), embedder)
    declined = ""
    if embedder == "face-net":
        assert anchors is not None  # embedder_for checked
        descriptors = face_net_embeddings(images, keypoints, anchors)
        labels = ward_groups(descriptors, settings.face_net_cut, settings.face_net_collapse)
        largest = int(np.bincount(labels).max())
        if settings.embedder == "face-net" or largest <= settings.face_net_max_share * n:
            return IdentityGrouping(labels, "face-net")
        declined = f"the face net saw one person in {largest} of {n} faces"
    threshold = settings.threshold
    if threshold is None:
        threshold = threshold_for(n, settings.false_matches)
    emb = embeddings(images, keypoints, anchors, settings)
    return IdentityGrouping(group_embeddings(emb, threshold, settings), "hand-made", declined)


def identity_groups(
    images: np.ndarray,
    keypoints: np.ndarray,
    anchors: Anchors | None = None,
    settings: IdentitySettings | None = None,
) -> np.ndarray:
    """(N,) identity labels 0..G-1 for uint8 (N, S, S) images with (N, K, 2) keypoints."""
    return group_identities(images, keypoints, anchors, settings).labels
