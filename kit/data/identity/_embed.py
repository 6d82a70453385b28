"""Embed: PCA whitening, nuisance attribute projection of pose, and within-group whitening."""

from __future__ import annotations

import numpy as np

from kit.data.identity._align import Alignment
from kit.data.identity._settings import IdentitySettings


def nuisance(alignment: Alignment) -> np.ndarray:
    """(N, q) pose/expression variables read off the aligned anchors: each anchor's offset from
    the template, and the offsets' absolute values (the descriptor is mirror-averaged, so head
    turns left and right look alike). Missing anchors count as on the template."""
    off = np.nan_to_num(alignment.aligned - alignment.template[None])
    off = off.reshape(len(off), -1)
    return np.concatenate([off, np.abs(off)], axis=1)


def _top_components(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N, k) top left singular vectors of x, unit columns (PCA whitening of centred x).

    Few rows: eigenvectors of the (N, N) Gram matrix. Many: randomised range finding (Halko et
    al.) with two power iterations. Both use only matrix products and small eigenproblems: QR
    and SVD of tall matrices are slow in multithreaded OpenBLAS when the cores are busy."""
    n, d = x.shape
    if n <= 512:
        _, vectors = np.linalg.eigh(x @ x.T)
        return vectors[:, ::-1][:, :k]
    rng = np.random.default_rng(seed)
    q = _orthonormal(x @ rng.standard_normal((d, k + 32)))
    for _ in range(2):
        q = _orthonormal(x @ (x.T @ q))
    small = q.T @ x
    _, vectors = np.linalg.eigh(small @ small.T)
    return q @ vectors[:, ::-1][:, :k]


def _orthonormal(y: np.ndarray) -> np.ndarray:
    """Orthonormal basis of y's columns by Cholesky QR, twice for accuracy (CholQR2)."""
    for _ in range(2):
        gram = y.T @ y
        gram += 1e-12 * np.trace(gram) * np.eye(len(gram))
        y = y @ np.linalg.inv(np.linalg.cholesky(gram)).T
    return y


def _unit_rows(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def embed(
    descriptors: np.ndarray, settings: IdentitySettings, pose: np.ndarray | None = None
) -> np.ndarray:
    """(N, D) descriptors -> (N, k) unit-length embeddings: PCA whitening (full, as the left
    singular vectors), then the pose directions projected out (when `pose` is given)."""
    n = len(descriptors)
    k = int(min(settings.max_dims, max(2, n // settings.rows_per_dim), n - 1, descriptors.shape[1]))
    if k < 1:
        return np.zeros((n, 1), np.float32)
    x = descriptors - descriptors.mean(0)
    z = _top_components(x.astype(np.float64), k, settings.seed)
    if pose is not None and pose.shape[1] and settings.remove_pose:
        z = _project_out(z, pose, settings.pose_dims)
    return _unit_rows(z).astype(np.float32)


_MAX_POSE_VARIABLES = 16


def _project_out(z: np.ndarray, pose: np.ndarray, rank: int) -> np.ndarray:
    """Nuisance attribute projection: drop the `rank` directions of z best predicted (least
    squares) from the pose variables. Reduced rank, because every dropped direction also loses
    some identity; and many pose variables (every keypoint, without anchors) are first reduced
    to their main components, at most one per 10 rows, or the regression would fit noise."""
    scale = pose.std(0)
    keep = scale > 1e-9
    v = (pose[:, keep] - pose[:, keep].mean(0)) / scale[keep]
    most = min(_MAX_POSE_VARIABLES, len(z) // 10)
    if v.shape[1] > most:
        _, vectors = np.linalg.eigh(v.T @ v)
        v = v @ vectors[:, ::-1][:, :most]
    rank = min(rank, v.shape[1], z.shape[1] - 1)
    if rank < 1:
        return z
    gram = v.T @ v
    coef = np.linalg.solve(gram + 1e-9 * np.trace(gram) * np.eye(len(gram)), v.T @ (z - z.mean(0)))
    fitted = v @ coef
    _, vectors = np.linalg.eigh(fitted.T @ fitted)
    basis = vectors[:, ::-1][:, :rank]  # (k, rank): the best-predicted directions of z
    return z - (z @ basis) @ basis.T


def within_whiten(emb: np.ndarray, labels: np.ndarray, shrink: float) -> np.ndarray:
    """Within-class covariance normalisation from provisional groups: scale down the directions
    along which rows of one group differ (what a person's pose, expression and lighting change),
    so the second pass sees identity more than condition. Groups of one row carry no such
    information; with too few rows in shared groups the embedding is returned as it is."""
    counts = np.bincount(labels)
    shared = counts[labels] >= 2
    n_groups = int((counts >= 2).sum())
    dims = emb.shape[1]
    if shared.sum() - n_groups < dims:
        return emb
    e = emb.astype(np.float64)
    means = np.zeros((len(counts), dims))
    np.add.at(means, labels, e)
    means /= np.maximum(counts, 1)[:, None]
    r = (e - means[labels])[shared]
    within = r.T @ r / (len(r) - n_groups)
    within += shrink * np.trace(within) / dims * np.eye(dims)
    values, vectors = np.linalg.eigh(within)
    out = (e - e.mean(0)) @ (vectors / np.sqrt(values))
    return _unit_rows(out).astype(np.float32)
