"""`RunOutcome`: what became of one planned run, as plan.json's "outcome" records it. Written by
kit.planning.stage and kit.planning.search, read by kit.pipeline and kit.cli.plan_view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from kit.planning.planner import PlannedRun


class _Trained(Protocol):
    run_id: str

    @property
    def cv_score(self) -> float: ...


@dataclass(frozen=True)
class RunOutcome:
    """A planned run (as it started: its epochs may differ from the plan's), its wall seconds,
    and its run id and CV when it was trained (None: skipped or not started), with why."""

    planned: PlannedRun
    actual_seconds: float
    run_id: str | None
    cv: float | None
    note: str

    @classmethod
    def of(cls, planned: PlannedRun, run: _Trained | None, seconds: float, note: str) -> RunOutcome:
        cv = run.cv_score if run else None
        return cls(planned, round(seconds, 1), run.run_id if run else None, cv, note)

    @property
    def name(self) -> str:
        return self.planned.name

    @property
    def epochs(self) -> int:
        return self.planned.epochs

    def to_json(self) -> dict[str, Any]:
        return {
            **self.planned.describe(),
            "actual_seconds": self.actual_seconds,
            "run_id": self.run_id,
            "cv": self.cv,
            "note": self.note,
        }
