"""Align: anchors, the per-row similarity transform onto the Procrustes mean shape, and the
warp (with frontalisation) that samples each row's aligned patch."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from kit.data.identity._settings import IdentitySettings


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
class Alignment:
    """template: (A, 2) mean anchor shape in image pixels; params: (N, 4) a, b, tx, ty with
    image = [[a, -b], [b, a]] @ template_point + t; aligned: (N, A, 2) each row's anchors mapped
    into the template frame (NaN where missing)."""

    template: np.ndarray
    params: np.ndarray
    aligned: np.ndarray
    anchors: Anchors | None


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
