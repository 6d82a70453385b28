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
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import special
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

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

# Chance matches per row the merge threshold lets through (threshold_for). Calibrated by
# benchmarks/identity_calibration.py: on IMM as FKD-like crops with FKD's 4 keypoints, the
# highest recall at precision >= 0.9 whose fkd-proxy precision estimate is >= 0.9 too (2 has
# IMM's precision 0.92 and the proxy's 0.89; 1 has 0.97 and 0.93 for a recall 0.87 vs 0.87).
DEFAULT_FALSE_MATCHES = 1.0


@dataclass(frozen=True)
class Anchors:
    """Which keypoint indices locate the face; each entry is averaged over its present indices.

    left_eye / right_eye are the subject's (FKD's convention); nose and mouth are optional. Prefer
    a point present in every row (FKD: mouth_center_bottom_lip, not the mean of the mouth points,
    which would move between rows with 4 and with 15 keypoints).
    """

    left_eye: tuple[int, ...]
    right_eye: tuple[int, ...]
    nose: tuple[int, ...] = ()
    mouth: tuple[int, ...] = ()

    def groups(self) -> tuple[tuple[int, ...], ...]:
        return tuple(g for g in (self.left_eye, self.right_eye, self.nose, self.mouth) if g)


# FKD's 15 keypoints: eye centres, nose tip, bottom lip (the 4 most rows have).
FKD15_ANCHORS = Anchors(left_eye=(0,), right_eye=(1,), nose=(10,), mouth=(14,))


@dataclass(frozen=True)
class IdentitySettings:
    """Knobs of identity_groups; the defaults are the calibrated ones (see the benchmark)."""

    # Merge while two groups' mean S-normed similarity is >= threshold (z units); None derives
    # it from the number of rows: threshold_for(N, false_matches).
    threshold: float | None = None
    false_matches: float = DEFAULT_FALSE_MATCHES
    patch: int = 64  # aligned patch side, pixels
    crop: float = 1.7  # patch half-side in RMS radii of the mean anchor shape, centred ...
    lift: float = 0.35  # ... this many radii above its centroid: more brow and hair, less
    # mouth and chin, which change with expression (IMM at false_matches 1, mean over patch
    # sizes 62-66: precision 0.92 -> 0.96, recall 0.77 -> 0.86 from lift 0)
    # Without anchors the mean shape is every keypoint's; outlines (jaw, brows) spread wider
    # than eyes, nose and mouth (IMM's 58 points: 1.35 times), hence a smaller factor.
    crop_all_keypoints: float = 1.25
    hog_cells: int = 11  # HOG cells per side
    hog_bins: int = 9
    lbp_grid: int = 8  # LBP cells per side
    max_dims: int = 128  # PCA whitening keeps at most this many dimensions ...
    rows_per_dim: int = 5  # ... and at most rows / rows_per_dim (whitening noise on few rows)
    frontalise: bool = True
    mirror: bool = True
    remove_pose: bool = True
    pose_dims: int = 3  # embedding directions the pose may take away
    refine: bool = True  # second pass whitened by the first pass's within-group covariance
    within_shrink: float = 0.5  # ridge on that covariance, as a share of its mean eigenvalue
    seed: int = 0  # randomised SVD and S-norm subsample; the output is deterministic per seed


@dataclass(frozen=True)
class Alignment:
    """template: (A, 2) mean anchor shape in image pixels; params: (N, 4) a, b, tx, ty with
    image = [[a, -b], [b, a]] @ template_point + t; aligned: (N, A, 2) each row's anchors mapped
    into the template frame (NaN where missing)."""

    template: np.ndarray
    params: np.ndarray
    aligned: np.ndarray
    anchors: Anchors | None


@dataclass(frozen=True)
class PairScores:
    """Pairs of rows in one group vs pairs showing one person."""

    precision: float
    recall: float
    true_pairs: int  # same group and same person
    group_pairs: int  # same group
    person_pairs: int  # same person


# ---------------------------------------------------------------------------------------- align


def anchor_points(keypoints: np.ndarray, anchors: Anchors | None) -> np.ndarray:
    """(N, K, 2) keypoints -> (N, A, 2) float64 anchor points (NaN where none is present).
    Without anchors every keypoint is its own anchor."""
    kp = np.asarray(keypoints, np.float64)
    if anchors is None:
        return kp.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN groups stay NaN
        return np.stack([np.nanmean(kp[:, list(g)], axis=1) for g in anchors.groups()], axis=1)


def _anchor_weights(n_anchors: int, anchors: Anchors | None) -> np.ndarray:
    # Eyes pin rotation and scale; nose and mouth move with pose and expression, so count half.
    if anchors is None:
        return np.ones(n_anchors)
    return np.array([1.0, 1.0] + [0.5] * (n_anchors - 2))


def _fit_similarity(template: np.ndarray, points: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(N, 4) weighted least-squares similarity template -> each row's points (NaN = missing).

    Rows with one anchor keep the median rotation/scale and match that anchor; rows with none
    take the median transform (the typical face position)."""
    w = weights[None] * ~np.isnan(points[..., 0])
    present = (w > 0).sum(1)
    p = np.nan_to_num(points)
    total = np.maximum(w.sum(1), 1e-12)
    cs = w @ template / total[:, None]  # (N, 2) weighted template centroid per row
    cp = np.einsum("na,nad->nd", w, p) / total[:, None]
    s = template[None] - cs[:, None]
    d = p - cp[:, None]
    den = np.maximum((w * (s**2).sum(-1)).sum(1), 1e-12)
    a = (w * (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1])).sum(1) / den
    b = (w * (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0])).sum(1) / den
    fitted = present >= 2
    a0, b0 = (np.median(a[fitted]), np.median(b[fitted])) if fitted.any() else (1.0, 0.0)
    a, b = np.where(fitted, a, a0), np.where(fitted, b, b0)
    tx = cp[:, 0] - (a * cs[:, 0] - b * cs[:, 1])
    ty = cp[:, 1] - (b * cs[:, 0] + a * cs[:, 1])
    none = present == 0
    if none.any():
        tx[none] = np.median(tx[~none]) if (~none).any() else 0.0
        ty[none] = np.median(ty[~none]) if (~none).any() else 0.0
    return np.stack([a, b, tx, ty], 1)


def _to_template(points: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Inverse of the per-row similarity: image pixels -> template frame."""
    a, b, tx, ty = (params[:, i, None] for i in range(4))
    x, y = points[..., 0] - tx, points[..., 1] - ty
    det = a * a + b * b
    return np.stack([(a * x + b * y) / det, (-b * x + a * y) / det], -1)


def align(keypoints: np.ndarray, anchors: Anchors | None = None, iterations: int = 3) -> Alignment:
    """Similarity-align every row's anchors to their generalised Procrustes mean.

    The mean stays in image pixels (fit back onto the plain mean each round), so the template
    frame is where an average face sits in the image."""
    pts = anchor_points(keypoints, anchors)
    n_anchors = pts.shape[1]
    weights = _anchor_weights(n_anchors, anchors)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        full = ~np.isnan(pts[..., 0]).any(1)
        start = np.nanmean(pts[full] if full.sum() >= 2 else pts, axis=0)
    if np.isnan(start).any():  # an anchor missing in every row: park it at the others' centroid
        start = np.where(np.isnan(start), np.nanmean(start, axis=0), start)
    if np.isnan(start).any():  # no keypoints at all
        start = np.zeros_like(start)
    template = start
    for _ in range(iterations):
        aligned = _to_template(pts, _fit_similarity(template, pts, weights))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.where(np.isnan(aligned).all(0), template, np.nanmean(aligned, axis=0))
        back = _fit_similarity(mean, start[None], weights)  # keep position and scale
        template = _apply(mean[None], back)[0]
    params = _fit_similarity(template, pts, weights)
    return Alignment(template, params, _to_template(pts, params), anchors)


def _apply(points: np.ndarray, params: np.ndarray) -> np.ndarray:
    a, b, tx, ty = (params[:, i, None] for i in range(4))
    x, y = points[..., 0], points[..., 1]
    return np.stack([a * x - b * y + tx, b * x + a * y + ty], -1)


# ---------------------------------------------------------------------------------------- warp


def _crop_box(template: np.ndarray, crop: float, lift: float) -> tuple[float, float, float]:
    """Centre x, y and half-side of the square patch in the template frame."""
    centre = template.mean(0)
    radius = max(float(np.sqrt(((template - centre) ** 2).sum(1).mean())), 1e-6)
    return float(centre[0]), float(centre[1]) - lift * radius, crop * radius


def _knots(tpl: np.ndarray, row: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-linear knots template -> row along one axis; empty when not strictly ordered."""
    keep = ~np.isnan(row)
    t, r = tpl[keep], row[keep]
    o = np.argsort(t, kind="stable")
    t, r = t[o], r[o]
    if len(t) < 2 or np.any(np.diff(t) <= 0) or np.any(np.diff(r) <= 0):
        return np.empty(0), np.empty(0)
    return t, r


def _axis_maps(
    alignment: Alignment, grid_x: np.ndarray, grid_y: np.ndarray, frontalise: bool
) -> np.ndarray:
    """(N, 2, P) template-frame coordinates sampled per row along x and along y.

    Frontalisation moves the row's eyes and nose (x) and eye line, nose and mouth (y) onto the
    template's with a piecewise-linear map; beyond the outer knots the map eases back to the
    identity at one patch width away."""
    n = len(alignment.params)
    out = np.broadcast_to(np.stack([grid_x, grid_y]), (n, 2, len(grid_x))).copy()
    anchors = alignment.anchors
    if not frontalise or anchors is None or not (anchors.nose or anchors.mouth):
        return out
    tpl, al = alignment.template, alignment.aligned
    # x: right eye, midline point, left eye; y: eye line, nose, mouth (those named).
    x_idx = [0, 1, 2]  # groups() drops unnamed anchors: 2 is the nose, else the mouth
    y_rows = [(al[:, 0, 1] + al[:, 1, 1]) / 2]
    y_tpl = [(tpl[0, 1] + tpl[1, 1]) / 2]
    for j in range(2, tpl.shape[0]):
        y_rows.append(al[:, j, 1])
        y_tpl.append(tpl[j, 1])
    for axis, grid, tpl_k, rows_k in (
        (0, grid_x, tpl[x_idx, 0], al[:, x_idx, 0]),
        (1, grid_y, np.array(y_tpl), np.stack(y_rows, 1)),
    ):
        span = float(grid[-1] - grid[0])
        lo, hi = min(grid[0], tpl_k.min()) - span, max(grid[-1], tpl_k.max()) + span
        for i in range(n):
            t, r = _knots(tpl_k, rows_k[i])
            if len(t):
                out[i, axis] = np.interp(grid, np.r_[lo, t, hi], np.r_[lo, r, hi])
    return out


def _bilinear(images: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Sample (n, H, W) images at (n, P, P) pixel coordinates, edges replicated."""
    n, h, w = images.shape
    sx = np.clip(sx, 0, w - 1)
    sy = np.clip(sy, 0, h - 1)
    x0 = np.minimum(sx.astype(np.int64), w - 2)
    y0 = np.minimum(sy.astype(np.int64), h - 2)
    fx, fy = (sx - x0).astype(np.float32), (sy - y0).astype(np.float32)
    flat = images.reshape(n, -1)
    idx = (y0 * w + x0).reshape(n, -1)

    def at(offset: int) -> np.ndarray:
        return np.take_along_axis(flat, idx + offset, 1).reshape(sx.shape).astype(np.float32)

    top = at(0) * (1 - fx) + at(1) * fx
    bottom = at(w) * (1 - fx) + at(w + 1) * fx
    return top * (1 - fy) + bottom * fy


def aligned_patches(
    images: np.ndarray, alignment: Alignment, settings: IdentitySettings, chunk: int = 512
) -> np.ndarray:
    """(N, H, W) uint8 -> (N, P, P) float32 patches of the template frame, each row warped."""
    crop = settings.crop if alignment.anchors is not None else settings.crop_all_keypoints
    cx, cy, half = _crop_box(alignment.template, crop, settings.lift)
    p = settings.patch
    offsets = np.linspace(-half, half, p)
    maps = _axis_maps(alignment, cx + offsets, cy + offsets, settings.frontalise)
    out = np.empty((len(images), p, p), np.float32)
    for start in range(0, len(images), chunk):
        sl = slice(start, start + chunk)
        a, b, tx, ty = (alignment.params[sl, i, None, None] for i in range(4))
        gx = maps[sl, 0][:, None, :]  # (n, 1, P)
        gy = maps[sl, 1][:, :, None]  # (n, P, 1)
        out[sl] = _bilinear(images[sl], a * gx - b * gy + tx, b * gx + a * gy + ty)
    return out


# ------------------------------------------------------------------------------------ describe


def _soft_cells(size: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear spatial binning along one axis of `size` pixels into `cells` cells: each pixel
    votes into its two nearest cell centres (clamped at the edges), so a face shifted by part
    of a cell changes the histograms smoothly instead of jumping (Dalal & Triggs' trilinear
    interpolation, spatial part). Returns (lower cell, upper cell, weight of the upper)."""
    f = (np.arange(size) + 0.5) * (cells / size) - 0.5
    lo = np.floor(f).astype(np.int64)
    w = f - lo
    hi = np.clip(lo + 1, 0, cells - 1)
    lo = np.clip(lo, 0, cells - 1)
    return lo, hi, w


def _pool(values: np.ndarray, bins: np.ndarray, cells: int, n_bins: int) -> np.ndarray:
    """(n, S, S) per-pixel bin and vote -> (n, cells, cells, n_bins) soft-binned histograms."""
    n, size, _ = bins.shape
    lo, hi, w = _soft_cells(size, cells)
    out = np.zeros(n * cells * cells * n_bins)
    rows = np.arange(n)[:, None, None] * cells
    for ys, wy in ((lo, 1 - w), (hi, w)):
        for xs, wx in ((lo, 1 - w), (hi, w)):
            cell = ((rows + ys[None, :, None]) * cells + xs[None, None, :]) * n_bins
            vote = values * (wy[None, :, None] * wx[None, None, :])
            out += np.bincount((cell + bins).ravel(), vote.ravel(), len(out))
    return out.reshape(n, cells, cells, n_bins).astype(np.float32)


def _hog_cells(patches: np.ndarray, cells: int, bins: int) -> np.ndarray:
    """(n, cells, cells, bins) unsigned-orientation gradient histograms, each pixel's magnitude
    split linearly between its two nearest orientation bins and its nearest cells."""
    gx = np.zeros_like(patches)
    gy = np.zeros_like(patches)
    gx[:, :, 1:-1] = patches[:, :, 2:] - patches[:, :, :-2]
    gy[:, 1:-1] = patches[:, 2:] - patches[:, :-2]
    mag = np.hypot(gx, gy)
    pos = np.mod(np.arctan2(gy, gx), np.float32(np.pi)) * np.float32(bins / np.pi)
    lo = pos.astype(np.int64)
    frac = pos - lo
    lower = _pool(mag * (1 - frac), lo % bins, cells, bins)
    return lower + _pool(mag * frac, (lo + 1) % bins, cells, bins)


def _hog_blocks(cells: np.ndarray) -> np.ndarray:
    """2x2-cell blocks, L2-Hys normalised (clipped at 0.2 and renormalised), flattened."""
    h = cells
    blocks = np.concatenate([h[:, :-1, :-1], h[:, 1:, :-1], h[:, :-1, 1:], h[:, 1:, 1:]], -1)
    for clip in (0.2, None):
        blocks = blocks / np.sqrt((blocks**2).sum(-1, keepdims=True) + 1e-6)
        if clip is not None:
            blocks = np.minimum(blocks, clip)
    return blocks.reshape(len(h), -1)


# LBP(8, 1) neighbours in bit order, and which bit each becomes in the mirrored patch.
_RING = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
_RING_MIRROR = tuple(_RING.index((dy, -dx)) for dy, dx in _RING)


def _uniform_lbp_table() -> np.ndarray:
    """8-bit LBP code -> uniform-pattern bin (58 uniform codes, then one bin for the rest)."""
    codes = np.arange(256)
    bits = (codes[:, None] >> np.arange(8)) & 1
    transitions = (bits != np.roll(bits, 1, axis=1)).sum(1)
    table = np.full(256, 58, np.int64)
    table[transitions <= 2] = np.arange(int((transitions <= 2).sum()))
    return table


_LBP_TABLE = _uniform_lbp_table()
_LBP_BINS = 59
_MIRROR_CODE = (((np.arange(256)[:, None] >> np.arange(8)) & 1) << np.array(_RING_MIRROR)).sum(1)
_LBP_MIRROR = np.zeros(_LBP_BINS, np.int64)  # bin -> the bin its mirrored codes fall in
_LBP_MIRROR[_LBP_TABLE] = _LBP_TABLE[_MIRROR_CODE]


def _lbp_cells(patches: np.ndarray, grid: int) -> np.ndarray:
    """(n, grid, grid, 59) uniform LBP(8, 1) histograms, each normalised to sum 1."""
    p = patches.shape[1]
    centre = patches[:, 1:-1, 1:-1]
    code = np.zeros(centre.shape, np.uint8)
    for bit, (dy, dx) in enumerate(_RING):
        ring = patches[:, 1 + dy : p - 1 + dy, 1 + dx : p - 1 + dx]
        code |= (ring >= centre).astype(np.uint8) << np.uint8(bit)
    hist = _pool(np.ones(code.shape, np.float32), _LBP_TABLE[code], grid, _LBP_BINS)
    return hist / np.maximum(hist.sum(-1, keepdims=True), 1)


def _join(hog_cells: np.ndarray, lbp_cells: np.ndarray) -> np.ndarray:
    parts = [np.sqrt(_hog_blocks(hog_cells)), np.sqrt(lbp_cells.reshape(len(lbp_cells), -1))]
    # Square roots compare histograms by the Hellinger distance; each family weighs the same
    # whatever its length.
    return np.concatenate([x / np.sqrt(x.shape[1]) for x in parts], axis=1)


def describe(patches: np.ndarray, settings: IdentitySettings, chunk: int = 512) -> np.ndarray:
    """(N, P, P) aligned patches -> (N, D) float32 HOG + LBP descriptors.

    With settings.mirror the descriptor is the mean of the patch's and its mirror image's, taken
    from the same cell histograms: mirroring reverses the cell columns, maps orientation bin j to
    -j and permutes the LBP bits (the soft cell binning is symmetric, so this is exact)."""
    out = []
    hog_flip = (-np.arange(settings.hog_bins)) % settings.hog_bins
    for start in range(0, len(patches), chunk):
        block = np.asarray(patches[start : start + chunk], np.float32)
        hog = _hog_cells(block, settings.hog_cells, settings.hog_bins)
        lbp = _lbp_cells(block, settings.lbp_grid)
        d = _join(hog, lbp)
        if settings.mirror:
            mirrored = _join(hog[:, :, ::-1][..., hog_flip], lbp[:, :, ::-1][..., _LBP_MIRROR])
            d = (d + mirrored) / 2
        out.append(d.astype(np.float32))
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


# --------------------------------------------------------------------------------------- embed


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


def _row_medians(x: np.ndarray) -> np.ndarray:
    """Median of each row's non-NaN values (sorting puts NaN last; faster than nanmedian)."""
    x = np.sort(x, axis=1)
    count = (~np.isnan(x)).sum(1)
    rows = np.arange(len(x))
    return (x[rows, (count - 1) // 2] + x[rows, count // 2]) / 2


def similarity_z(emb: np.ndarray, seed: int = 0, cohort: int = 2000) -> np.ndarray:
    """(N, N) float32 symmetric S-norm of cosine similarities: each side's score minus that row's
    median similarity over a cohort of other rows, over 1.4826 MAD, averaged. Median and MAD
    because the row's own person is a minority of its similarities that must not move them."""
    s = emb @ emb.T
    n = len(s)
    if n < 3:
        return np.zeros((n, n), np.float32)
    rng = np.random.default_rng(seed)
    cols = np.sort(rng.choice(n, size=min(cohort, n), replace=False))
    sample = s[:, cols].astype(np.float64)
    sample[cols, np.arange(len(cols))] = np.nan  # a row's similarity to itself
    mu = _row_medians(sample)
    sd = 1.4826 * _row_medians(np.abs(sample - mu[:, None]))
    sd = np.maximum(sd, 1e-6).astype(np.float32)
    mu = mu.astype(np.float32)
    z = (s - mu[:, None]) / sd[:, None]
    z += z.T
    z /= 2
    return z


@dataclass(frozen=True)
class Dendrogram:
    """Average-linkage merge tree of a similarity matrix; cut it at any threshold."""

    tree: np.ndarray  # scipy linkage matrix over distances top - similarity
    top: float
    n: int

    def cut(self, threshold: float) -> np.ndarray:
        """(N,) labels 0..G-1 (in order of first row): clusters whose members' mean pairwise
        similarity to each other cluster stays below threshold."""
        if self.n <= 1:
            return np.zeros(self.n, np.int64)
        raw = hierarchy.fcluster(self.tree, self.top - threshold, criterion="distance")
        return _first_seen_labels(raw)


def dendrogram(z: np.ndarray) -> Dendrogram:
    """Average linkage over a (N, N) symmetric similarity (larger = more alike)."""
    n = len(z)
    if n <= 1:
        return Dendrogram(np.zeros((0, 4)), 0.0, n)
    dist = -np.asarray(z, np.float64)  # linkage wants distances >= 0: top - similarity
    np.fill_diagonal(dist, np.inf)
    top = -float(dist.min())
    dist += top
    np.fill_diagonal(dist, 0.0)
    condensed = squareform(dist, checks=False)
    del dist
    return Dendrogram(hierarchy.linkage(condensed, method="average"), top, n)


def cluster(z: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage clusters: merge while two clusters' mean similarity is >= threshold."""
    return dendrogram(z).cut(threshold)


def _first_seen_labels(raw: np.ndarray) -> np.ndarray:
    _, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
    rank = np.empty(len(first), np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse]


def threshold_for(n_rows: int, false_matches: float = DEFAULT_FALSE_MATCHES) -> float:
    """The z threshold that `false_matches` of a row's n_rows - 1 others pass by chance.

    S-normed similarities between different people follow N(0, 1) closely (measured on IMM and
    on the fkd-proxy: 0.21% pass z = 3 against 0.13% for the normal), so a fixed z would let more
    strangers through as N grows; holding the expected count fixed keeps precision instead."""
    p = min(false_matches / max(n_rows - 1, 1), 0.5)
    return float(special.ndtri(1.0 - p))


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


def group_embeddings(
    emb: np.ndarray, threshold: float, settings: IdentitySettings | None = None
) -> np.ndarray:
    """(N,) labels 0..G-1 from embeddings: cluster; with settings.refine, whiten by the
    groups' within-group covariance and cluster again at the same threshold."""
    settings = settings or IdentitySettings()
    labels = cluster(similarity_z(emb, settings.seed), threshold)
    if settings.refine:
        emb = within_whiten(emb, labels, settings.within_shrink)
        labels = cluster(similarity_z(emb, settings.seed), threshold)
    return labels


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


# ------------------------------------------------------------------------------------ evaluate


def pair_precision_recall(groups: np.ndarray, truth: np.ndarray) -> PairScores:
    """Pairwise precision (same-group pairs that are one person) and recall (same-person pairs
    put in one group), counted from the label contingency table."""
    g = np.unique(np.asarray(groups), return_inverse=True)[1].ravel()
    t = np.unique(np.asarray(truth), return_inverse=True)[1].ravel()
    if len(g) != len(t):
        raise ValueError(f"groups has {len(g)} rows, truth has {len(t)}")

    def pairs(counts: np.ndarray) -> int:
        c = counts.astype(np.int64)
        return int((c * (c - 1) // 2).sum())

    _, joint = np.unique(g * (t.max(initial=0) + 1) + t, return_counts=True)
    true_pairs = pairs(joint)
    group_pairs = pairs(np.bincount(g))
    person_pairs = pairs(np.bincount(t))
    precision = true_pairs / group_pairs if group_pairs else 1.0
    recall = true_pairs / person_pairs if person_pairs else 1.0
    return PairScores(precision, recall, true_pairs, group_pairs, person_pairs)
