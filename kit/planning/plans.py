"""The plan's records: a measured `Candidate`, a `PlannedRun`, a `PlannedSearch` and the
`Plan` that holds them. Written by kit.planning.planner, read by the stages that train a plan,
plan.json and the plan's tables."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from kit.planning.portfolio import PortfolioEntry
from kit.training.spec import RunSpec

SAFETY = 1.1  # estimates are padded: a budget is a promise


@dataclass(frozen=True)
class Candidate:
    """A portfolio entry with its measured costs on this device and data."""

    entry: PortfolioEntry
    epoch_seconds: float  # one fold: one epoch of training plus its validation
    fold_seconds: float  # one fold's fixed cost: model set-up, OOF and test predictions
    workers: int = 1  # folds trained at once (the costs above were timed that way)
    student: bool = False  # a pseudo-labelled student of this entry (trained after a stack)

    def cost(self, epochs: int, folds: int) -> float:
        return SAFETY * folds * (epochs * self.epoch_seconds + self.fold_seconds) / self.workers

    def epochs_within(self, seconds: float, folds: int) -> int:
        """The most epochs whose cost fits `seconds` (0 if not even one)."""
        per_epoch = SAFETY * folds * self.epoch_seconds / self.workers
        fixed = SAFETY * folds * self.fold_seconds / self.workers
        return max(0, int((seconds - fixed) // per_epoch)) if per_epoch > 0 else 0


@dataclass(frozen=True)
class PlannedRun:
    name: str
    family: str
    overrides: dict
    epochs: int
    seed: int
    seconds: float  # estimated, all folds
    folds: int = 5
    candidate: Candidate | None = field(default=None, compare=False, repr=False)
    student: bool = False  # trains on pseudo labels from the stack of the runs before it

    def with_epochs(self, epochs: int) -> PlannedRun:
        """The same run at another length (its estimate follows)."""
        assert self.candidate is not None
        return replace(self, epochs=epochs, seconds=self.candidate.cost(epochs, self.folds))

    @property
    def max_epochs(self) -> int:
        return self.candidate.entry.max_epochs if self.candidate else self.epochs

    def spec(self) -> RunSpec:
        """The run to train (its seed as a setting, as `kit train --set seed=N` gives it)."""
        return RunSpec(self.family, {**self.overrides, "seed": self.seed}, epochs=self.epochs)

    def describe(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "overrides": self.overrides,
            "epochs": self.epochs,
            "seed": self.seed,
            "estimated_seconds": round(self.seconds, 1),
            "student": self.student,
        }


@dataclass(frozen=True)
class PlannedSearch:
    """Fold-0 trials of the `base` run's family at its epochs, then the best trial on all
    folds if it beats the base config (kit.planning.search)."""

    base: str  # the planned run whose family and epochs are searched
    family: str
    epochs: int
    trials: int  # new trials (the base config is trial 0: its fold 0 is reused)
    trial_seconds: float  # estimated, one trial, `workers` of them side by side
    final_seconds: float  # estimated: the winner's other folds
    folds: int = 5

    @property
    def seconds(self) -> float:
        return self.trials * self.trial_seconds + self.final_seconds

    @property
    def name(self) -> str:
        """Its outcome row's name until a winner names it (kit.planning.search)."""
        return f"{self.base}-search"

    def describe(self) -> dict:
        return {
            "base": self.base,
            "family": self.family,
            "epochs": self.epochs,
            "trials": self.trials,
            "estimated_seconds": round(self.seconds, 1),
        }


@dataclass(frozen=True)
class Plan:
    folds: int
    seconds: float  # the time the runs may take
    runs: tuple[PlannedRun, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (name, why)
    notes: tuple[str, ...] = field(default=())
    stack_seconds: float = 0.0  # reserved for the stack, out of the time given to the planner
    teacher_stack_seconds: float = 0.0  # the part of it for a student's teacher (before it)
    search: PlannedSearch | None = None  # after the runs, in the time they leave

    @property
    def estimated_seconds(self) -> float:
        return sum(r.seconds for r in self.runs) + self.search_seconds

    @property
    def search_seconds(self) -> float:
        return self.search.seconds if self.search else 0.0

    @property
    def models(self) -> int:
        """Base models for the stack: the runs, and the search's winner."""
        return len(self.runs) + (1 if self.search else 0)

    def describe(self) -> dict:
        return {
            "folds": self.folds,
            "seconds_for_runs": round(self.seconds, 1),
            "stack_seconds": round(self.stack_seconds, 1),
            "estimated_seconds": round(self.estimated_seconds, 1),
            "runs": [r.describe() for r in self.runs],
            "search": self.search.describe() if self.search else None,
            "skipped": [{"name": n, "why": w} for n, w in self.skipped],
        }
