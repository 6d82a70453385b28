"""Identity groups: rows that show the same person get one label, so a person's frames share a fold.

With the extra ``kit[faces]`` installed, a face-identity network describes each face
(_face_net: dlib's ResNet metric net, run in torch from dlib's weights, which _face_weights
finds and reads; _chips: each face
similarity-warped into the net's chip frame from the competition's eye and nose anchors), and
Ward linkage cuts the 128-d descriptors at a calibrated distance (near-identical frames
counted once). It recovers people across
videos, days and cameras: IMM's 32 people exactly, fkd-proxy's 203 people as 284 groups (the
hand-made path: 634, mostly one video each). Without it, identity comes from the images and
keypoints alone, by hand-made descriptors:

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

Modules: _settings (IdentitySettings), _face_weights, _face_net and _chips (the face net),
_align (step 1: anchors, similarity fit, warp), _describe (2: HOG, LBP), _embed (3: whitening,
pose projection, within-group whitening), _cluster (4 and 5: S-norm, average linkage,
threshold), _evaluate (pairwise precision and recall); embeddings and identity_groups chain
them here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist

from kit.data.identity import _face_weights
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
    _first_seen_labels,
    cluster,
    dendrogram,
    group_embeddings,
    similarity_z,
    threshold_for,
)
from kit.data.identity._describe import describe
from kit.data.identity._embed import embed, nuisance, within_whiten
from kit.data.identity._evaluate import PairScores, pair_precision_recall
from kit.data.identity._settings import (
    DEFAULT_FACE_NET_CUT,
    DEFAULT_FALSE_MATCHES,
    EMBEDDERS,
    IdentitySettings,
)
from kit.errors import DataError

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


def embedder_for(settings: IdentitySettings, anchors: Anchors | None) -> str:
    """The embedder identity_groups will use: "face-net" or "hand-made"."""
    if settings.embedder not in EMBEDDERS:
        raise DataError(
            f"identity embedder {settings.embedder!r}: unknown", hint=f"use {', '.join(EMBEDDERS)}"
        )
    if settings.embedder == "hand-made":
        return "hand-made"
    weights = _face_weights.face_net_weights()
    named = os.environ.get(_face_weights.WEIGHTS_ENV)
    if weights is not None and not weights.is_file() and named:
        raise DataError(
            "no face-net weights file",
            path=weights,
            hint=f"fix or unset {_face_weights.WEIGHTS_ENV}",
        )
    installed = weights is not None and weights.is_file()
    if settings.embedder == "auto":
        return "face-net" if installed and anchors is not None else "hand-made"
    if anchors is None:
        raise DataError(
            "the face net needs the competition's eyes",
            hint="name them in competition.toml [options] identity_anchors",
        )
    if not installed:
        raise DataError(
            "the face net's weights are not installed",
            hint=f"pip install 'kit[faces]', or point {_face_weights.WEIGHTS_ENV} at the file",
        )
    return "face-net"


def face_net_embeddings(
    images: np.ndarray, keypoints: np.ndarray, anchors: Anchors, chunk: int = 256
) -> np.ndarray:
    """(N, 128) face-net descriptors (same person: Euclidean distance under about 0.6)."""
    from kit.data.identity import _chips, _face_net  # torch, only when the net runs

    weights = _face_weights.face_net_weights()
    if weights is None:
        raise DataError("the face net's weights are not installed", hint="pip install 'kit[faces]'")
    net = _face_net.load_face_net(weights)
    transforms = _chips.chip_transforms(keypoints, anchors)
    parts = [
        _face_net.describe_chips(
            _chips.face_chips(images[s : s + chunk], transforms[s : s + chunk]), net
        )
        for s in range(0, len(images), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, 128), np.float32)


def ward_groups(descriptors: np.ndarray, cut: float, collapse: float = 0.0) -> np.ndarray:
    """(N,) labels 0..G-1: Ward linkage of the descriptors, cut at `cut`.

    With collapse > 0, rows first join by average linkage at that distance (near-identical
    frames) and Ward runs on those groups' means, one point each: Ward's cost of a merge grows
    with the sizes merged, so without it a person filmed in more frames would need a larger cut
    to join their videos."""
    n = len(descriptors)
    if n < 2:
        return np.zeros(n, np.int64)
    x = descriptors.astype(np.float64)
    frames = np.arange(n)
    if collapse > 0:
        tree = hierarchy.linkage(pdist(x), method="average")
        frames = _first_seen_labels(hierarchy.fcluster(tree, collapse, criterion="distance"))
        counts = np.bincount(frames)
        means = np.zeros((len(counts), x.shape[1]))
        np.add.at(means, frames, x)
        x = means / counts[:, None]
    if len(x) < 2:
        return np.zeros(n, np.int64)
    tree = hierarchy.linkage(x, method="ward")
    return _first_seen_labels(hierarchy.fcluster(tree, cut, criterion="distance")[frames])


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
