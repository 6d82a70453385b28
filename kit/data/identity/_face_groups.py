"""The face net's path: which embedder a grouping uses, the net's descriptors of each face, and
Ward groups of them (near-identical frames counted once). Torch loads only when the net runs."""

from __future__ import annotations

import os

import numpy as np
from scipy.cluster import hierarchy
from scipy.spatial.distance import pdist

from kit.data.identity import _face_weights
from kit.data.identity._align import Anchors
from kit.data.identity._cluster import _first_seen_labels
from kit.data.identity._settings import EMBEDDERS, IdentitySettings
from kit.errors import DataError


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
