"""Describe: HOG and uniform-LBP histograms of aligned patches, soft spatial binning, mirror
averaged, square-rooted (Hellinger)."""

from __future__ import annotations

import numpy as np

from kit.data.identity._settings import IdentitySettings


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
