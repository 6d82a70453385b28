"""Zero-shot portfolio selection, as AutoGluon builds its portfolios: a plain algorithm on
measured learning curves (no files, no training), used by benchmarks/build_portfolio.py.

Every configuration was trained on fold 0 of every competition, its validation score recorded
each epoch with its seconds per epoch. At a time budget B (seconds of one fold's training) a
configuration reaches the epochs B affords, and its error there is its curve at those epochs,
normalised by the competition's mean-shape score (1.0 = no better than the mean shape). A set
of configurations scores, at B, its best member's error; `select` adds, greedily, the
configuration that most lowers the mean of that over every competition and budget, until
`size` or until no configuration lowers it. The budgets span the machines the portfolio must
serve, so a cheap configuration wins the small budgets and a large one the large budgets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Evaluation", "portfolio_error", "select"]


@dataclass(frozen=True)
class Evaluation:
    """One configuration trained on one competition's fold 0: its normalised validation
    error after each epoch (`curve[i]`: after epoch i + 1; score / the mean shape's) and its
    cost (`epoch_seconds` per epoch, `fixed_seconds` once)."""

    config: str
    competition: str
    curve: tuple[float, ...]
    epoch_seconds: float
    fixed_seconds: float = 0.0

    def epochs_within(self, seconds: float) -> int:
        """Epochs `seconds` afford, at most those measured."""
        if self.epoch_seconds <= 0:
            return len(self.curve)
        return max(
            0, min(len(self.curve), int((seconds - self.fixed_seconds) // self.epoch_seconds))
        )

    def error_within(self, seconds: float) -> float:
        """The best normalised error reached within `seconds` (1.0 before its first epoch: a
        run that cannot finish one epoch predicts no better than the mean shape)."""
        epochs = self.epochs_within(seconds)
        return min(1.0, *self.curve[:epochs]) if epochs else 1.0


def portfolio_error(
    chosen: Sequence[str], evaluations: Sequence[Evaluation], budgets: Sequence[float]
) -> float:
    """The mean over competitions and budgets of the chosen set's best error (1.0 per cell
    where no chosen configuration was evaluated)."""
    by_cell = _cells(evaluations)
    competitions = sorted({e.competition for e in evaluations})
    total = 0.0
    for comp in competitions:
        for budget in budgets:
            errors = [by_cell[comp][c].error_within(budget) for c in chosen if c in by_cell[comp]]
            total += min(errors, default=1.0)
    return total / max(1, len(competitions) * len(budgets))


def select(
    evaluations: Sequence[Evaluation], budgets: Sequence[float], size: int
) -> list[tuple[str, float]]:
    """Up to `size` configurations, in the order chosen, each with the portfolio's error once
    it joined. Only configurations evaluated on every competition are candidates: a zero-shot
    portfolio must carry over. Ties go to the cheaper configuration (its mean epoch seconds)."""
    by_cell = _cells(evaluations)
    competitions = sorted(by_cell)
    everywhere = (
        sorted(set.intersection(*(set(by_cell[c]) for c in competitions))) if competitions else []
    )
    cost = {
        c: sum(by_cell[comp][c].epoch_seconds for comp in competitions) / len(competitions)
        for c in everywhere
    }
    chosen: list[tuple[str, float]] = []
    current = math.inf
    while len(chosen) < size:
        names = [n for n, _ in chosen]
        options = [
            (portfolio_error([*names, c], evaluations, budgets), cost[c], c)
            for c in everywhere
            if c not in names
        ]
        if not options:
            break
        error, _, best = min(options)
        if error >= current - 1e-12:
            break
        chosen.append((best, error))
        current = error
    return chosen


def _cells(evaluations: Sequence[Evaluation]) -> dict[str, dict[str, Evaluation]]:
    cells: dict[str, dict[str, Evaluation]] = {}
    for e in evaluations:
        cells.setdefault(e.competition, {})[e.config] = e
    return cells
