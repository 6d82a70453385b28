"""The portfolio: pre-tuned configurations, shipped as data (kit/models/portfolio.toml)."""

from __future__ import annotations

import itertools
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kit.errors import KitError

PORTFOLIO_FILE = Path(__file__).resolve().parents[1] / "models" / "portfolio.toml"
# The training rows of the data the portfolio's epochs were measured on (fkd-proxy).
REFERENCE_ROWS = 2449


def steps_scale(train_rows: int, reference_rows: int = REFERENCE_ROWS) -> float:
    """How many of this data's epochs make one epoch's optimiser steps in the portfolio's
    evidence: reference_rows / rows, never below 1 (a larger set keeps the evidence's epochs)."""
    return max(1.0, reference_rows / max(train_rows, 1))


@dataclass(frozen=True)
class PortfolioEntry:
    """One configuration: a family plus overrides, and where it pays (see portfolio.toml)."""

    name: str
    family: str
    overrides: dict[str, Any] = field(default_factory=dict)
    min_epochs: int = 1
    max_epochs: int = 30
    devices: tuple[str, ...] = ("cpu", "gpu")
    evidence: str = ""
    # Measured (epochs, CV score / the mean shape's CV score) points, epochs ascending.
    curve: tuple[tuple[int, float], ...] = ()
    # The same per competition where the builder measured it there (its mean is `curve`).
    curves: Mapping[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)

    def for_competition(self, name: str) -> PortfolioEntry:
        """The entry judged by its curve on competition `name` when measured there: one
        configuration can lead on one competition and trail on another."""
        if name not in self.curves:
            return self
        return replace(self, curve=self.curves[name])

    def for_rows(self, train_rows: int) -> PortfolioEntry:
        """The entry on a data set of `train_rows`: `max_epochs` (where more stopped paying)
        stands for a number of optimiser steps, so a smaller set may take as many steps in
        more epochs (imm-58's 192 photos: the heatmap at 30 epochs 4.99 px, at 51 epochs 4.10;
        docs/benchmarks.md). The minimum and the curve keep the evidence's epochs: the curve
        orders the configurations, the minimum lets them in."""
        scale = steps_scale(train_rows)
        if scale == 1.0:
            return self
        return replace(self, max_epochs=max(self.max_epochs, round(self.max_epochs * scale)))

    def runs_on(self, device_type: str) -> bool:
        return ("cpu" if device_type == "cpu" else "gpu") in self.devices

    def expected(self, epochs: int) -> float:
        """The expected score at `epochs` as a share of the mean shape's (1.0 = no better),
        interpolated in log(epochs) between the measured points; flat beyond the last, and
        towards 1.0 at 1 epoch below the first. 1.0 without a curve (unknown)."""
        if not self.curve or epochs < 1:
            return 1.0
        points = self.curve if self.curve[0][0] <= 1 else ((1, 1.0), *self.curve)
        if epochs >= points[-1][0]:
            return points[-1][1]
        for (e0, s0), (e1, s1) in itertools.pairwise(points):
            if e0 <= epochs <= e1:
                t = (math.log(epochs) - math.log(e0)) / (math.log(e1) - math.log(e0))
                return s0 + t * (s1 - s0)
        return points[0][1]


def load_portfolio(path: Path = PORTFOLIO_FILE) -> list[PortfolioEntry]:
    """The entries, best expected first."""
    from kit.models import list_models

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise KitError(f"cannot read the portfolio: {exc}", path=path) from exc
    entries = []
    for raw in data.get("config", []):
        try:
            entry = PortfolioEntry(
                name=raw["name"],
                family=raw["family"],
                overrides=dict(raw.get("overrides", {})),
                min_epochs=int(raw.get("min_epochs", 1)),
                max_epochs=int(raw.get("max_epochs", 30)),
                devices=tuple(raw.get("devices", ("cpu", "gpu"))),
                evidence=raw.get("evidence", ""),
                curve=_curve(raw.get("curve", [])),
                curves={comp: _curve(points) for comp, points in raw.get("curves", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise KitError(f"portfolio entry {raw.get('name', '?')}: {exc}", path=path) from exc
        if entry.family not in list_models():
            unknown = f"portfolio entry {entry.name}: unknown family {entry.family}"
            raise KitError(unknown, path=path)
        entries.append(entry)
    return entries


def _curve(raw: list) -> tuple[tuple[int, float], ...]:
    points = tuple((int(e), float(v)) for e, v in raw)
    epochs = [e for e, _ in points]
    if epochs != sorted(set(epochs)) or any(e < 1 or v <= 0 for e, v in points):
        raise ValueError(f"curve {raw} must list [epochs, share] with epochs rising from 1")
    return points
