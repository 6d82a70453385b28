"""`kit run`'s planner: a portfolio of pre-tuned configurations (kit/models/portfolio.toml),
their costs measured on this device (`calibrate.measure`), and the runs that fit a budget
(`plan_runs`, a plain algorithm on those costs).

Modules: budget (how a `kit run` budget splits; every deadline), planner (the plan), calibrate,
portfolio, stage (train a plan through the fold queue), search (the plan's search), outcome
(`RunOutcome`: what became of each planned run), fixed_epochs (the older `--epochs` rule).

The algorithm and the portfolio load without torch; `measure` needs it.
"""

from kit.planning.planner import (
    FOLD_CHOICES,
    MAX_SHARE_OF_BEST,
    Candidate,
    Plan,
    PlannedRun,
    plan_runs,
)
from kit.planning.portfolio import PORTFOLIO_FILE, PortfolioEntry, load_portfolio

__all__ = [
    "FOLD_CHOICES",
    "MAX_SHARE_OF_BEST",
    "PORTFOLIO_FILE",
    "Candidate",
    "Plan",
    "PlannedRun",
    "PortfolioEntry",
    "load_portfolio",
    "plan_runs",
]
