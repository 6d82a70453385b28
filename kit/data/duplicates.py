"""Exact and near-duplicate images: perceptual-hash candidates, pixel check, transitive groups.

1. Candidates: a 64-bit DCT perceptual hash (pHash) per image (area downscale to 32x32, the 8x8
   lowest DCT frequencies, one bit per coefficient above their median), all pairs within
   CANDIDATE_BITS by chunked XOR + popcount.
2. Check: a candidate pair is a near-duplicate when the images, lightly blurred, correlate at
   >= MIN_CORRELATION at the best shift of up to 1 px (correlation ignores brightness/contrast).
   The 32x32 thumbnails' correlation (>= PREFILTER_CORRELATION) first drops most candidates
   cheaply; only the rest get the full-resolution shift search.
3. Groups: union-find over confirmed pairs and identical-pixel rows.

Why two stages (measured on synthetic faces and on the fkd-proxy's real faces): aligned face
crops share their low-frequency layout, so the hash alone cannot tell a lightly changed copy
from another face. Copies (brightness +10, a 1 px shift, noise sd 3, or all three) are 0-10 bits
from their original, but distinct synthetic faces can be 0 bits apart and different real people
6 bits apart. The blurred shift-tolerant correlation separates them cleanly: copies >= 0.996,
distinct synthetic faces <= 0.981, different real people <= 0.936.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HASH_GRID = 32  # downscale size before the DCT
HASH_SIDE = 8  # 8x8 low-frequency coefficients -> 64 bits
# Recall knob: the perturbations above reach 10 bits (distances are even, since every hash
# has 32 bits set), so 12 keeps one step of margin; higher only adds pairs to check.
CANDIDATE_BITS = 12
# Precision knob: midway between copies (>= 0.996) and the closest distinct faces (0.981).
MIN_CORRELATION = 0.99
MAX_SHIFT = 1
# Speed only: copies' thumbnails correlate >= 0.93 (>= 0.89 even for a diagonal shift and noise
# sd 5); this drops ~85% of real candidates before the expensive check.
PREFILTER_CORRELATION = 0.85

_POPCOUNT_8 = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(1).astype(np.uint8)


@dataclass(frozen=True)
class DuplicateGroups:
    """Duplicate groups among N images.

    labels: (N,) int64 group label per row (0..G-1); rows sharing a label are duplicates,
            a row without duplicates has a label of its own.
    groups: row indices (sorted) of every group with more than one row, largest first.
    exact:  per entry of `groups`, True when all its images are pixel-identical.
    """

    labels: np.ndarray
    groups: list[np.ndarray]
    exact: list[bool]

    @property
    def rows_in_groups(self) -> int:
        return int(sum(len(g) for g in self.groups))


def _area_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) weights that average source pixels into `out` equal bins (exact box filter)."""
    edges = np.arange(out + 1) * (size / out)
    lo = np.maximum(edges[:-1, None], np.arange(size)[None])
    hi = np.minimum(edges[1:, None], np.arange(size)[None] + 1)
    return np.clip(hi - lo, 0, None) / (size / out)


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: coefficients = D @ signal."""
    k, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    d = np.cos(np.pi * (x + 0.5) * k / n) * np.sqrt(2 / n)
    d[0] /= np.sqrt(2)
    return d


def thumbnails(images: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """(N, H, W) uint8 -> (N, 32, 32) float32 area-averaged thumbnails."""
    n, h, w = images.shape
    rows = _area_matrix(h, HASH_GRID).astype(np.float32)
    cols = _area_matrix(w, HASH_GRID).astype(np.float32).T
    out = np.empty((n, HASH_GRID, HASH_GRID), np.float32)
    for start in range(0, n, chunk):
        out[start : start + chunk] = rows @ images[start : start + chunk].astype(np.float32) @ cols
    return out


def phash(images: np.ndarray, thumbs: np.ndarray | None = None) -> np.ndarray:
    """(N, H, W) uint8 images -> (N,) uint64 perceptual hashes."""
    thumbs = thumbnails(images) if thumbs is None else thumbs
    dct = _dct_matrix(HASH_GRID)[:HASH_SIDE].astype(np.float32)
    coef = np.einsum("ih,nhw,jw->nij", dct, thumbs, dct, optimize=True).reshape(len(thumbs), -1)
    bits = coef > np.median(coef, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits per element of a uint64 array."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _POPCOUNT_8[x[..., None].view(np.uint8)].sum(-1)


def close_pairs(hashes: np.ndarray, threshold: int, chunk: int = 1024) -> tuple[np.ndarray, ...]:
    """All pairs (i < j) with Hamming distance <= threshold, by chunked XOR + popcount."""
    hashes = np.ascontiguousarray(hashes, np.uint64)
    found_i, found_j = [], []
    for start in range(0, len(hashes), chunk):
        block = hashes[start : start + chunk]
        dist = popcount(block[:, None] ^ hashes[None, start:])  # upper triangle only
        i, j = np.nonzero(dist <= threshold)
        keep = j > i
        found_i.append(i[keep] + start)
        found_j.append(j[keep] + start)
    if not found_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(found_i).astype(np.int64), np.concatenate(found_j).astype(np.int64)


def connected_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union-find over edges (a[i], b[i]): (n,) labels 0..G-1, numbered by first row."""
    parent = np.arange(n)
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    while True:  # hook each edge to its smaller root, then jump pointers until flat
        low = np.minimum(parent[a], parent[b])
        before = parent.copy()
        np.minimum.at(parent, parent[a], low)
        np.minimum.at(parent, parent[b], low)
        while not np.array_equal(parent, parent[parent]):
            parent = parent[parent]
        if np.array_equal(parent, before):
            break
    return np.unique(parent, return_inverse=True)[1].astype(np.int64)


def labels_to_edges(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges joining every row to the first row with the same label (any hashable dtype)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return np.arange(len(labels)), first[inverse.ravel()]


def exact_labels(images: np.ndarray) -> np.ndarray:
    """(N,) label per distinct pixel content: equal labels <=> identical bytes."""
    flat = np.ascontiguousarray(images.reshape(len(images), -1))
    rows = flat.view(np.dtype((np.void, flat.shape[1] * flat.itemsize))).ravel()
    return np.unique(rows, return_inverse=True)[1].ravel()


def _box_blur(images: np.ndarray) -> np.ndarray:
    """3x3 mean filter (edge-replicated), float32: takes the sensor noise out of the check."""
    h, w = images.shape[1:]
    padded = np.pad(images.astype(np.float32), ((0, 0), (1, 1), (1, 1)), mode="edge")
    return sum(padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)) / 9


def _standardise(flat: np.ndarray) -> np.ndarray:
    centred = flat - flat.mean(axis=1, keepdims=True)
    return centred / (np.linalg.norm(centred, axis=1, keepdims=True) + 1e-6)


def shift_correlation(a: np.ndarray, b: np.ndarray, max_shift: int = MAX_SHIFT) -> np.ndarray:
    """(n,) best Pearson correlation between blurred a[k] and b[k] moved by <= max_shift px."""
    a, b = _box_blur(a), _box_blur(b)
    n, h, w = a.shape
    m = max_shift
    centre = _standardise(a[:, m : h - m, m : w - m].reshape(n, -1))
    best = np.full(n, -1.0, np.float32)
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            moved = b[:, m + dy : h - m + dy, m + dx : w - m + dx].reshape(n, -1)
            best = np.maximum(best, np.einsum("nd,nd->n", centre, _standardise(moved)))
    return best


def confirmed_pairs(
    images: np.ndarray,
    thumbs: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    min_correlation: float,
    chunk: int = 512,
) -> np.ndarray:
    """Mask over candidate pairs (i, j): True where the pixels confirm a near-duplicate."""
    flat = _standardise(thumbs.reshape(len(thumbs), -1))
    keep = np.einsum("nd,nd->n", flat[i], flat[j]) >= PREFILTER_CORRELATION
    survivors = np.flatnonzero(keep)
    for start in range(0, len(survivors), chunk):
        pairs = survivors[start : start + chunk]
        keep[pairs] = shift_correlation(images[i[pairs]], images[j[pairs]]) >= min_correlation
    return keep


def _split_groups(labels: np.ndarray) -> list[np.ndarray]:
    """Row indices of every label used more than once, largest group first."""
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels)
    members = np.split(order, np.cumsum(sizes)[:-1])
    multi = [rows for rows in members if len(rows) > 1]
    return sorted(multi, key=lambda rows: (-len(rows), rows[0]))


def find_duplicates(
    images: np.ndarray,
    candidate_bits: int = CANDIDATE_BITS,
    min_correlation: float = MIN_CORRELATION,
) -> DuplicateGroups:
    """Group exact copies and confirmed near-duplicates of (N, H, W) uint8 images, transitively."""
    if len(images) == 0:
        return DuplicateGroups(labels=np.zeros(0, np.int64), groups=[], exact=[])
    exact = exact_labels(images)
    thumbs = thumbnails(images)
    i, j = close_pairs(phash(images, thumbs), candidate_bits)
    keep = confirmed_pairs(images, thumbs, i, j, min_correlation)
    ei, ej = labels_to_edges(exact)
    a, b = np.concatenate([i[keep], ei]), np.concatenate([j[keep], ej])
    labels = connected_labels(len(images), a, b)
    groups = _split_groups(labels)
    is_exact = [bool(np.all(exact[rows] == exact[rows[0]])) for rows in groups]
    return DuplicateGroups(labels=labels, groups=groups, exact=is_exact)
