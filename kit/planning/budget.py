"""How `kit run` splits its budget (`RunBudget`) and every deadline that follows from it
(`Deadlines`): derived in one place, for the planner and for the `--epochs` rule alike."""

from __future__ import annotations

from dataclasses import dataclass, replace

from kit.competition import Competition
from kit.data.folds import DEFAULT_K, read_folds_meta
from kit.errors import KitError
from kit.models import list_models
from kit.planning.planner import Plan
from kit.store.files import read_json
from kit.training.device import resolve_device

FOLDS_ALLOWANCE = 10.0  # seconds the folds stage may take after planning (identity grouping)
# On a CPU: lenet (fast) and, from 30 minutes on, sp (the seed's Model 1: its 15488 x 500
# dense layer makes a fold ~6x slower than lenet's at 96 px, measured on this project's VM).
CPU_FAMILIES = ("lenet", "sp")
CPU_SP_BUDGET = 30 * 60


@dataclass(frozen=True)
class RunBudget:
    """How one `kit run` splits its budget: the reserves for the stack and the submission, and
    (for `--epochs`) the families searched, the epochs per trial and the finals per family."""

    budget: float  # seconds, whole pipeline
    families: list[str]
    epochs: int | None  # per trial (None: each family's search space decides)
    best_n: int
    stack_reserve: float  # estimated; the planner measures its own (Plan.stack_seconds)
    submit_reserve: float

    def deadlines(self, started: float, plan: Plan | None = None) -> Deadlines:
        """Every deadline of the run, from its start (time.monotonic) and, with the planner,
        its plan (whose measured stack time replaces the estimate)."""
        end = started + self.budget
        if plan is None:
            return Deadlines(end, self.submit_reserve, self.stack_reserve)
        students = sum(r.seconds for r in plan.runs if r.student)
        return Deadlines(
            end, self.submit_reserve, plan.stack_seconds, plan.teacher_stack_seconds, students
        )


@dataclass(frozen=True)
class Deadlines:
    """The run's deadlines (time.monotonic seconds), each derived here only."""

    end: float  # start + budget
    submit_reserve: float
    stack_seconds: float  # the final stack's reserve (with the planner: the teacher's too)
    teacher_stack_seconds: float = 0.0  # the part of stack_seconds for a student's teacher
    student_seconds: float = 0.0  # planned for students, after the other runs

    def with_stack(self, seconds: float) -> Deadlines:
        """The same run with the final stack's reserve measured again (the teacher's kept)."""
        return replace(self, stack_seconds=self.teacher_stack_seconds + seconds)

    def planning_seconds(self, now: float) -> float:
        """What the planner may plan (training and stacking) when it starts at `now`."""
        return self.end - self.submit_reserve - now - FOLDS_ALLOWANCE

    @property
    def train(self) -> float:
        """The planned runs (and, with --epochs, the search and its finals) end by then."""
        return self.end - self.submit_reserve - self.stack_seconds

    @property
    def search(self) -> float:
        """The planner's search ends by then: the students' time stays theirs."""
        return self.train - self.student_seconds

    @property
    def students(self) -> float:
        """The students end by then: the teacher's stack is done, the final stack is left."""
        return self.end - self.submit_reserve - (self.stack_seconds - self.teacher_stack_seconds)


def default_families(device: str | None, budget: float) -> list[str]:
    """Every family on a GPU; on a CPU lenet, plus sp from CPU_SP_BUDGET seconds on."""
    if resolve_device(device).type != "cpu":
        return list_models()
    chosen = CPU_FAMILIES if budget >= CPU_SP_BUDGET else CPU_FAMILIES[:1]
    return [f for f in chosen if f in list_models()]


def default_epochs(budget: float, device: str | None) -> int | None:
    """Epochs per trial on a CPU: about one per 2 budget minutes (3..30); on a GPU the
    families' search spaces decide."""
    if resolve_device(device).type != "cpu":
        return None
    return int(min(30, max(3, round(budget / 120))))


def stack_seconds_estimate(rows: int, coordinates: int, folds: int) -> float:
    """A generous guess of `kit stack`'s time: per coordinate and fold, K small LightGBM fits
    (the inner CV that picks the rounds, then the fit) on about `rows` rows; calibrated on this
    project's 2-core VM (fkd-proxy, 2449 rows x 30 coordinates x 5 folds: 86-127 s)."""
    return coordinates * folds * (0.02 + 7e-5 * rows * folds)


def split_budget(
    comp: Competition,
    budget: float,
    *,
    families: list[str] | None,
    epochs: int | None,
    best_n: int,
    device: str | None,
    upload: bool,
) -> RunBudget:
    if budget <= 0:
        raise KitError(f"--budget {budget:g} s must be positive")
    rows = _cached_rows(comp)
    stored = read_folds_meta(comp)
    folds = int(stored["k"]) if stored else DEFAULT_K
    estimate = stack_seconds_estimate(rows, 2 * comp.num_keypoints, folds)
    return RunBudget(
        budget=budget,
        families=list(families) if families else default_families(device, budget),
        epochs=epochs if epochs is not None else default_epochs(budget, device),
        best_n=best_n,
        stack_reserve=min(max(5.0, estimate), 0.3 * budget),
        submit_reserve=5.0 + (30.0 if upload else 0.0),
    )


def _cached_rows(comp: Competition) -> int:
    checksums = comp.workspace.checksums
    if checksums.is_file():
        return int(read_json(checksums).get("counts", {}).get("train_rows", 0))
    return 0
