"""The planner: which portfolio configurations, how many epochs, seeds and folds fit a budget.

A plain algorithm on measured costs (no files, no clock): `plan_runs(candidates, seconds)`.
The stack's time is reserved first, from its measured cost for the plan's models and folds
(`stack_seconds(models, folds)`). Rules, in order:
1. a configuration is scheduled only at or above its `min_epochs`, and only if its expected
   score at the epochs it can afford (an equal share of the time among `MIN_MODELS` runs) is
   clearly better than the mean shape (`CLEAR_GAIN`), whatever its family;
2. candidates are ordered by that expected score (the entry's measured learning curve), so a
   config that is best at full length but poor at the affordable epochs comes later;
3. take configurations in that order while each fits at its minimum; if fewer than
   `MIN_MODELS` fit at the first fold count, try the next (fewer folds) and keep the plan with
   more models;
4. spread the time left one epoch at a time over the chosen runs, to the run whose curve gains
   most per second (in order when no curve says), up to each one's `max_epochs`;
5. time still left buys a search (`PlannedSearch`): fold-0 trials of the first chosen run's
   family at its epochs, from its Optuna study (the run's own config is trial 0, reused), and
   the winner on all folds when it beats that config: a new base model. It needs room for
   `MIN_SEARCH_TRIALS` new trials besides the winner's other folds, and takes at most
   `MAX_SEARCH_TRIALS`;
6. time still left after that buys another seed of the chosen configurations (a new run each).
   Seeds come only once the search is at its widest: a searched config adds a new base model
   where a seed repeats one.
With `student_factor`, a pseudo-labelled student of the first chosen run is planned after the
minimum epochs (step 3), before any widening: on fkd-proxy a lenet student of a 3-model stack
scored public 2.006 against 2.365 without pseudo labels (docs/benchmarks.md, "Pseudo labels").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from kit.planning.portfolio import PortfolioEntry
from kit.training.spec import RunSpec

MIN_MODELS = 3  # a stack needs several diverse base models
FOLD_CHOICES = (5, 3)
SAFETY = 1.1  # estimates are padded: a budget is a promise
# Expected score at most this share of the mean shape's: "clearly better" (25 % lower error).
CLEAR_GAIN = 0.75
MIN_SEARCH_TRIALS = 4  # fewer new trials than this are not a search (TPE starts at random)
MAX_SEARCH_TRIALS = 16  # more time than this buys seeds instead


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


def no_stack(models: int, folds: int) -> float:
    return 0.0


def plan_runs(
    candidates: list[Candidate],
    seconds: float,
    fold_choices: tuple[int, ...] = FOLD_CHOICES,
    max_seeds: int = 2,
    stack_seconds: Callable[[int, int], float] = no_stack,
    student_factor: float = 0.0,
) -> Plan:
    """The runs that fit `seconds` together with their stack (see the module's rules).
    `candidates` best first; `stack_seconds(models, folds)` the stack's measured cost.

    `student_factor` > 0 also plans a pseudo-labelled student of the first chosen run (kit
    pseudo), whose epochs cost that many times the teacher config's (the test rows it also
    trains on), if it fits at its minimum epochs; a student needs a second stack (its
    teacher), which is reserved too."""
    best: Plan | None = None
    for folds in fold_choices:
        plan = _plan_with_stack(
            candidates, seconds, folds, max_seeds, stack_seconds, student_factor
        )
        if best is None or len(plan.runs) > len(best.runs):
            best = plan
        if len(plan.runs) >= MIN_MODELS:
            break
    assert best is not None
    return best


def _plan_with_stack(
    candidates: list[Candidate],
    seconds: float,
    folds: int,
    max_seeds: int,
    stack_seconds: Callable[[int, int], float],
    student_factor: float = 0.0,
) -> Plan:
    """Reserve the stack for MIN_MODELS models, plan, and plan again while the plan's own
    model count needs a larger reserve (more models: more meta-features)."""
    reserve = stack_seconds(MIN_MODELS, folds)
    for _ in range(3):
        left = max(0.0, seconds - reserve)
        plan = _plan_at(candidates, left, folds, max_seeds, student_factor)
        teachers = [r for r in plan.runs if not r.student]
        teacher = stack_seconds(len(teachers), folds) if len(teachers) < len(plan.runs) else 0.0
        need = stack_seconds(max(1, plan.models), folds) + teacher
        if need <= reserve:
            break
        reserve = need
    return replace(plan, seconds=seconds, stack_seconds=reserve, teacher_stack_seconds=teacher)


def _plan_at(
    candidates: list[Candidate],
    seconds: float,
    folds: int,
    max_seeds: int,
    student_factor: float = 0.0,
) -> Plan:
    chosen: list[tuple[Candidate, int]] = []
    skipped: list[tuple[str, str]] = []
    left = seconds
    for c, why_not in _ordered(candidates, seconds, folds):
        if why_not:
            skipped.append((c.entry.name, why_not))
        else:
            left = _take_at_minimum(c, left, folds, chosen, skipped)
    if student_factor > 0 and chosen:
        left = _take_at_minimum(
            _student_of(chosen[0][0], student_factor), left, folds, chosen, skipped
        )
    chosen, left = _widen(chosen, left, folds)
    runs = [_run(c, epochs, 0, folds) for c, epochs in chosen]
    search = _search(chosen, left, folds)
    left -= search.seconds if search else 0.0
    runs += _extra_seeds(chosen, left, folds, max_seeds)
    return Plan(
        folds=folds, seconds=seconds, runs=tuple(runs), skipped=tuple(skipped), search=search
    )


def _search(chosen: list[tuple[Candidate, int]], left: float, folds: int) -> PlannedSearch | None:
    """A search of the first chosen run's family, as wide as `left` allows (rule 5)."""
    base = next(((c, e) for c, e in chosen if not c.student), None)
    if base is None or folds < 2:
        return None
    c, epochs = base
    trial, final = c.cost(epochs, 1), c.cost(epochs, folds - 1)
    trials = min(MAX_SEARCH_TRIALS, int((left - final) // trial)) if trial > 0 else 0
    if trials < MIN_SEARCH_TRIALS:
        return None
    return PlannedSearch(c.entry.name, c.entry.family, epochs, trials, trial, final, folds)


def _take_at_minimum(
    c: Candidate,
    left: float,
    folds: int,
    chosen: list[tuple[Candidate, int]],
    skipped: list[tuple[str, str]],
) -> float:
    """Choose `c` at its minimum epochs if that fits `left`, else record why not; the time
    left after it."""
    need = c.cost(c.entry.min_epochs, folds)
    if need <= left:
        chosen.append((c, c.entry.min_epochs))
        return left - need
    why = f"its {c.entry.min_epochs} minimum epochs on {folds} folds take {need:.0f} s"
    skipped.append((c.entry.name, f"{why}; {left:.0f} s were left"))
    return left


def _student_of(teacher: Candidate, factor: float) -> Candidate:
    entry = replace(teacher.entry, name=f"{teacher.entry.name}-pseudo")
    return replace(
        teacher,
        entry=entry,
        epoch_seconds=teacher.epoch_seconds * factor,
        fold_seconds=teacher.fold_seconds * factor,
        student=True,
    )


def affordable_epochs(c: Candidate, seconds: float, folds: int) -> int:
    """Epochs within an equal share of `seconds` among MIN_MODELS runs, at most max_epochs."""
    return min(c.entry.max_epochs, c.epochs_within(seconds / MIN_MODELS, folds))


def _ordered(
    candidates: list[Candidate], seconds: float, folds: int
) -> list[tuple[Candidate, str]]:
    """Candidates by expected score at their affordable epochs (stable: the portfolio's order
    breaks ties and orders entries without a curve), each with why it is not run ("" = run)."""
    rows = []
    for index, c in enumerate(candidates):
        epochs = max(c.entry.min_epochs, affordable_epochs(c, seconds, folds))
        expected = c.entry.expected(epochs) if c.entry.curve else 1.0
        why = ""
        if c.entry.curve and expected > CLEAR_GAIN:
            why = (
                f"expected {expected:.2f} of the mean shape's error at the {epochs} epochs it can "
                f"afford: not clearly better"
            )
        rows.append((expected if c.entry.curve else 2.0, index, c, why))
    return [(c, why) for _, _, c, why in sorted(rows, key=lambda r: r[:2])]


def _widen(
    chosen: list[tuple[Candidate, int]], left: float, folds: int
) -> tuple[list[tuple[Candidate, int]], float]:
    """One more epoch at a time while it fits and stays under max_epochs: to the run whose
    curve gains most per second; where no curve gains, to each run in turn."""
    epochs = [e for _, e in chosen]
    turn = 0
    while True:
        steps = []
        for i, (c, _) in enumerate(chosen):
            step = c.cost(epochs[i] + 1, folds) - c.cost(epochs[i], folds)
            if epochs[i] < c.entry.max_epochs and step <= left:
                gain = (c.entry.expected(epochs[i]) - c.entry.expected(epochs[i] + 1)) / step
                steps.append((gain, (i - turn) % len(chosen), i, step))
        if not steps:
            break
        gain, _, i, step = max(steps, key=lambda s: (s[0], -s[1]))
        epochs[i] += 1
        left -= step
        turn = (i + 1) % len(chosen) if gain <= 0 else turn
    return [(c, e) for (c, _), e in zip(chosen, epochs, strict=True)], left


def _extra_seeds(
    chosen: list[tuple[Candidate, int]], left: float, folds: int, max_seeds: int
) -> list[PlannedRun]:
    extra = []
    for seed in range(1, max_seeds):
        for c, epochs in chosen:
            if c.student:
                continue
            need = c.cost(epochs, folds)
            if need <= left:
                extra.append(_run(c, epochs, seed, folds))
                left -= need
    return extra


def _run(c: Candidate, epochs: int, seed: int, folds: int) -> PlannedRun:
    name = c.entry.name if seed == 0 else f"{c.entry.name}-seed{seed}"
    return PlannedRun(
        name, c.entry.family, dict(c.entry.overrides), epochs, seed, c.cost(epochs, folds),
        folds, c, c.student,
    )  # fmt: skip
