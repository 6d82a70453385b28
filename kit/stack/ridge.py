"""The ridge stack: intercept + non-negative weights, shrunk towards the mean blend."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Ridge penalty grid, relative to the largest squared singular value of the design.
RIDGE_GRID = np.logspace(-6, 2, 17)


@dataclass
class RidgeFit:
    """prediction = blend + intercept + (x - x_mean) @ coef: weights shrunk towards the blend."""

    x_mean: np.ndarray
    coef: np.ndarray
    intercept: float
    penalty: float

    def predict(self, x: np.ndarray, blend: np.ndarray) -> np.ndarray:
        return blend + self.intercept + (x - self.x_mean) @ self.coef

    def weights(self) -> np.ndarray:
        """The effective weight of each base model (1/M + coef)."""
        return 1.0 / len(self.coef) + self.coef


def fit_ridge(x: np.ndarray, y: np.ndarray, blend: np.ndarray, weight: np.ndarray) -> RidgeFit:
    """Weighted ridge of y on base predictions `x` (n, M) with an intercept, every model's
    weight >= 0 and shrunk towards 1/M (the mean blend).

    The penalty comes from a grid by leave-one-out error of the unconstrained fit (hat-matrix
    shortcut on one SVD). Non-negative weights are Breiman's remedy for stacking correlated
    models: unconstrained, they take large opposite signs (e.g. -2, -1.7, +5) that fit the
    training rows and amplify any disagreement between the models on a new row.
    """
    w = weight / weight.sum()
    x_mean = w @ x
    target = y - blend
    intercept = float(w @ target)
    root = np.sqrt(weight)[:, None]
    xc = (x - x_mean) * root
    rc = (target - intercept) * root[:, 0]
    u, s, vt = np.linalg.svd(xc, full_matrices=False)
    if s.size == 0 or s[0] <= 1e-12:
        return RidgeFit(x_mean, np.zeros(x.shape[1]), intercept, 0.0)
    ur = u.T @ rc
    best: tuple[float, np.ndarray, float] | None = None
    for penalty in RIDGE_GRID * s[0] ** 2:
        shrink = s**2 / (s**2 + penalty)
        fitted = u @ (shrink * ur)
        leverage = (u**2) @ shrink + w  # + w: the intercept's share of each row's leverage
        press = float(np.sum(((rc - fitted) / np.maximum(1.0 - leverage, 1e-6)) ** 2))
        if best is None or press < best[0]:
            best = (press, vt.T @ (s / (s**2 + penalty) * ur), float(penalty))
    assert best is not None
    _, coef, penalty = best
    share = 1.0 / x.shape[1]
    if (coef + share).min() < 0:
        coef = _non_negative_ridge(xc, rc, penalty, share)
    return RidgeFit(x_mean, coef, intercept, penalty)


def _non_negative_ridge(xc: np.ndarray, rc: np.ndarray, penalty: float, share: float):
    """coef minimising |rc - xc coef|^2 + penalty |coef|^2 with coef >= -share (weights >= 0)."""
    from scipy.optimize import lsq_linear

    m = xc.shape[1]
    design = np.vstack([xc, np.sqrt(penalty) * np.eye(m)])
    target = np.concatenate([rc, np.zeros(m)])
    return lsq_linear(design, target, bounds=(-share, np.inf)).x
