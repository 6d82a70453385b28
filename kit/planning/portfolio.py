"""The portfolio: pre-tuned configurations, shipped as data (kit/models/portfolio.toml)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kit.errors import KitError

PORTFOLIO_FILE = Path(__file__).resolve().parents[1] / "models" / "portfolio.toml"


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

    def runs_on(self, device_type: str) -> bool:
        return ("cpu" if device_type == "cpu" else "gpu") in self.devices


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
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise KitError(f"portfolio entry {raw.get('name', '?')}: {exc}", path=path) from exc
        if entry.family not in list_models():
            unknown = f"portfolio entry {entry.name}: unknown family {entry.family}"
            raise KitError(unknown, path=path)
        entries.append(entry)
    return entries
