"""The planner: which portfolio configurations, how many epochs, seeds and folds fit a budget.

A plain algorithm on measured costs (no files, no clock): `plan_runs(candidates, seconds)`.
The stack's time is reserved first, from its measured cost for the plan's models and folds
(`stack_seconds(models, folds)`). Rules, in order:
1. a configuration is scheduled only at or above its `min_epochs`, and only if its expected
   score at the epochs it can afford (an equal share of the time among the candidates that
   fit) is clearly better than the mean shape (`CLEAR_GAIN`), whatever its family;
2. candidates are ordered by that expected score (the entry's measured learning curve), so a
   config that is best at full length but poor at the affordable epochs comes later;
3. take configurations in that order while each fits at its minimum;
4. spread the time left one epoch at a time over the chosen runs, to the run whose curve gains
   most per second (in order when no curve says), up to each one's `max_epochs`;
5. diversity by evidence, not by count: a chosen run whose expected score at its planned
   epochs is more than `MAX_SHARE_OF_BEST` times the best run's is dropped and the plan made
   again without it (its time goes to the others), until none is. On fkd-proxy a lenet at
   1.35x the heatmap's CV and on imm-58 a resnet and a lenet beside a heatmap added nothing
   to the stack (issue 24's measurements); a model within a quarter of the best can;
6. time still left buys a search (`PlannedSearch`): fold-0 trials of the best run's
   family at its epochs, from its Optuna study (the run's own config is trial 0, reused), and
   the winner on all folds when it beats that config: a new base model. It needs room for
   `MIN_SEARCH_TRIALS` new trials besides the winner's other folds, and takes at most
   `MAX_SEARCH_TRIALS`;
7. time still left after that buys another seed of the runs expected to score as the best
   one does (within `SEED_SHARE`): never a weaker model's seed. Seeds come only once the
   search is at its widest: a searched config adds a new base model where a seed repeats one;
8. time still left after the seeds widens the search past `MAX_SEARCH_TRIALS` (a machine
   faster than the portfolio's evidence: every run at its max_epochs), up to
   `WIDEST_SEARCH_TRIALS`, so the plan spends the budget;
9. what no rule could use (less than a seed, a search or another configuration's minimum)
   lengthens the best run past its max_epochs, up to `OVERTIME` times them: its curve is flat
   there, not worse (a cosine schedule over more steps), and a budget is spent;
10. once the runs and the search are done, the time they left (runs faster than measured, a
   search without a winner: its final's reserve) buys a seed of a first run at the epochs
   that fit, at the pace that run really trained, of a family the stack takes more of
   (`seed_for_time_left`): the seed its curve expects best, if within `MAX_SHARE_OF_BEST` of
   the best run. On fkd-proxy at 30 minutes the runs and a search without a winner left 23-25 %
   of the budget unused (docs/benchmarks.md).
As the plan trains, each run is fitted as it starts to the time left at the pace folds really
trained (kit.planning.stage, FoldQueue.pace), up to `longest_epochs`.
Fold counts are tried in order (`FOLD_CHOICES`); a later one is kept only when it plans more
models without a worse best expected score. With `student_factor`, a pseudo-labelled student
of the first chosen run is planned after the minimum epochs (step 3), before any widening: on
fkd-proxy a lenet student of a 3-model stack scored public 2.006 against 2.365 without pseudo
labels (docs/benchmarks.md, "Pseudo labels").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from kit.planning.plans import SAFETY, Candidate, Plan, PlannedRun, PlannedSearch

# A run expected to err more than this many times the best run's is not worth its time: the
# stack's pick would not choose it (rule 5).
MAX_SHARE_OF_BEST = 1.25
SEED_SHARE = 1.01  # seeds only of the runs expected to score as the best one does (rule 7)
FOLD_CHOICES = (5, 3)
# Expected score at most this share of the mean shape's: "clearly better" (25 % lower error).
CLEAR_GAIN = 0.75
MIN_SEARCH_TRIALS = 4  # fewer new trials than this are not a search (TPE starts at random)
MAX_SEARCH_TRIALS = 16  # more time than this buys seeds instead
OVERTIME = 2.0  # rule 9: at most this many times a run's max_epochs
WIDEST_SEARCH_TRIALS = 1000  # a bound on the study, not on the time: the deadline ends it
MAX_PACE = 2.0  # rule 10 trusts a run's own pace against its estimate within this factor


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
        if best is None or _fewer_folds_pay(plan, best):
            best = plan
    assert best is not None
    return best


def _fewer_folds_pay(plan: Plan, first: Plan) -> bool:
    """A later (smaller) fold count is kept only where the first fits no stack (at most one
    model) and it fits more models, its best run expected no worse."""
    return (
        len(first.runs) <= 1
        and len(plan.runs) > len(first.runs)
        and best_expected(plan.runs) <= best_expected(first.runs)
    )


def best_expected(runs: tuple[PlannedRun, ...] | list[PlannedRun]) -> float:
    """The lowest expected score (a share of the mean shape's) among the runs; 2.0 for none."""
    return min((_expected(r) for r in runs if not r.student), default=2.0)


def _expected(run: PlannedRun) -> float:
    return run.candidate.entry.expected(run.epochs) if run.candidate else 1.0


def _plan_with_stack(
    candidates: list[Candidate],
    seconds: float,
    folds: int,
    max_seeds: int,
    stack_seconds: Callable[[int, int], float],
    student_factor: float = 0.0,
) -> Plan:
    """Reserve the stack for one model, plan, and plan again while the plan's own model count
    needs a larger reserve (more models: more meta-features)."""
    reserve = stack_seconds(1, folds)
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
    chosen, left, skipped = _choose_by_evidence(candidates, seconds, folds, student_factor)
    runs = [_run(c, epochs, 0, folds) for c, epochs in chosen]
    search = _search(chosen, left, folds)
    left -= search.seconds if search else 0.0
    seeds, left = _extra_seeds(_as_good_as_the_best(chosen), left, folds, max_seeds)
    runs += seeds
    search = _search_the_rest(search, left)
    left = seconds - sum(r.seconds for r in runs) - (search.seconds if search else 0.0)
    runs = _overtime(runs, left)
    return Plan(
        folds=folds,
        seconds=seconds,
        runs=tuple(runs),
        skipped=tuple(skipped),
        search=search,
    )


Chosen = list[tuple[Candidate, int]]  # (candidate, epochs) each


def _choose_by_evidence(
    candidates: list[Candidate], seconds: float, folds: int, student_factor: float
) -> tuple[Chosen, float, list[tuple[str, str]]]:
    """Rules 1-5: the runs chosen and widened, again without those the evidence says are too
    weak, until none is; with the seconds left and every skipped run's why."""
    weak: list[tuple[str, str]] = []
    while True:
        names = {n for n, _ in weak}
        kept = [c for c in candidates if c.entry.name not in names]
        (chosen, left), skipped = _choose(kept, seconds, folds, student_factor)
        found = _too_weak(chosen)
        if not found:
            return chosen, left, skipped + weak
        weak += found


def _choose(
    candidates: list[Candidate], seconds: float, folds: int, student_factor: float
) -> tuple[tuple[Chosen, float], list[tuple[str, str]]]:
    """Rules 1-4: the runs at their minimum in expected order, then widened."""
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
    return _widen(chosen, left, folds), skipped


def _too_weak(chosen: Chosen) -> list[tuple[str, str]]:
    """The chosen runs expected to err more than MAX_SHARE_OF_BEST times the best run (rule 5),
    each with why."""
    runs = [(c, e, c.entry.expected(e)) for c, e in chosen if not c.student]
    if not runs:
        return []
    best_c, _, best = min(runs, key=lambda r: r[2])
    return [
        (
            c.entry.name,
            f"expected {share:.2f} of the mean shape's error at its {e} epochs, "
            f"{share / best:.2f}x the best run's ({best_c.entry.name}): the stack gains "
            f"nothing from a model that much weaker",
        )
        for c, e, share in runs
        if share > MAX_SHARE_OF_BEST * best
    ]


def _as_good_as_the_best(chosen: list[tuple[Candidate, int]]) -> list[tuple[Candidate, int]]:
    """The runs expected to score within SEED_SHARE of the best one: the only ones seeded."""
    runs = [(c, e) for c, e in chosen if not c.student]
    if not runs:
        return []
    best = min(c.entry.expected(e) for c, e in runs)
    return [(c, e) for c, e in runs if c.entry.expected(e) <= SEED_SHARE * best]


def _search(chosen: list[tuple[Candidate, int]], left: float, folds: int) -> PlannedSearch | None:
    """A search of the best run's family (the first among equals), as wide as `left` allows
    (rule 6)."""
    runs = [(c, e) for c, e in chosen if not c.student]
    if not runs or folds < 2:
        return None
    base = min(runs, key=lambda r: r[0].entry.expected(r[1]))
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
    """Epochs within `seconds` for this run alone, at most max_epochs: the best it could do
    (rule 5 then judges what it gets beside the others)."""
    return min(c.entry.max_epochs, c.epochs_within(seconds, folds))


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


def replan_search(plan: Plan, trained: dict[str, int], seconds: float) -> PlannedSearch | None:
    """The plan's search made again once its runs are trained (`trained`: name -> the epochs
    each trained), in the `seconds` really left: the time the runs saved and the stack's
    reserve that its measured fit freed go to it (rules 6 and 8)."""
    chosen = [
        (r.candidate, trained[r.name])
        for r in plan.runs
        if r.seed == 0 and not r.student and r.candidate and r.name in trained
    ]
    search = _search(chosen, seconds, plan.folds)
    return _search_the_rest(search, seconds - search.seconds) if search else None


def seed_for_time_left(
    plan: Plan,
    trained: dict[str, tuple[int, float]],
    seconds: float,
    full: frozenset[str] = frozenset(),
) -> PlannedRun | None:
    """Rule 10: the next seed of a first run, of a family the stack still takes (not in
    `full`), that `seconds` buy (`trained`: name -> the epochs it trained and the share of its
    estimate it took), at most at those epochs and at its real pace: the one its curve
    expects best, if within MAX_SHARE_OF_BEST of the best run; None when none is."""
    firsts = [
        r for r in plan.runs if r.seed == 0 and not r.student and r.candidate and r.name in trained
    ]
    if not firsts:
        return None
    best = min(_expected(r.with_epochs(trained[r.name][0])) for r in firsts)
    seeds = [_seed_at_pace(plan, r, *trained[r.name], seconds) for r in firsts]
    fitting = [s for s in seeds if s is not None and s.family not in full]
    chosen = min(fitting, key=_expected, default=None)
    return chosen if chosen and _expected(chosen) <= MAX_SHARE_OF_BEST * best else None


def longest_epochs(plan: Plan, run: PlannedRun) -> int:
    """The most epochs time saved may give `run` as it starts: its max_epochs, or OVERTIME
    times them for the configuration the plan expects best (as rule 9 does)."""
    firsts = [r for r in plan.runs if r.seed == 0 and not r.student and r.candidate]
    if run.student or run.candidate is None or not firsts:
        return run.max_epochs
    best = min(firsts, key=_expected)
    same = best.candidate is not None and best.candidate.entry.name == run.candidate.entry.name
    return int(OVERTIME * run.max_epochs) if same else run.max_epochs


def _seed_at_pace(
    plan: Plan, run: PlannedRun, epochs: int, pace: float, seconds: float
) -> PlannedRun | None:
    """Another seed of `run` within `seconds`, its costs scaled by `pace` (the share of its
    estimate the run took), trained alone: its last round of folds may leave workers idle."""
    assert run.candidate is not None
    pace = min(MAX_PACE, max(1 / MAX_PACE, pace)) if pace > 0 else 1.0  # 0: a reused run
    paced = replace(
        run.candidate,
        epoch_seconds=run.candidate.epoch_seconds * pace,
        fold_seconds=run.candidate.fold_seconds * pace,
    )
    rounds = math.ceil(plan.folds / paced.workers)
    fits = min(
        epochs, paced.epochs_within(seconds * plan.folds / paced.workers / rounds, plan.folds)
    )
    if fits < paced.entry.min_epochs:
        return None
    same = [r.seed for r in plan.runs if r.candidate and r.candidate.entry.name == run.name]
    return _run(paced, fits, 1 + max(same), plan.folds)


def _search_the_rest(search: PlannedSearch | None, left: float) -> PlannedSearch | None:
    """Time still left once the search is at its widest and the seeds are bought goes to more
    search trials (rule 8), up to WIDEST_SEARCH_TRIALS: on a machine faster than the
    portfolio's evidence every run sits at its max_epochs, and the search can still find a
    better, larger configuration (the spaces hold width and depth) where a seed repeats one."""
    if search is None or search.trial_seconds <= 0 or left < search.trial_seconds:
        return search
    trials = min(WIDEST_SEARCH_TRIALS, search.trials + int(left // search.trial_seconds))
    return replace(search, trials=max(search.trials, trials))


def _overtime(runs: list[PlannedRun], left: float) -> list[PlannedRun]:
    """Rule 9: `left` seconds as more epochs of the best first-seed runs, best first, each up
    to OVERTIME times its max_epochs."""
    firsts = [i for i, r in enumerate(runs) if r.seed == 0 and not r.student and r.candidate]
    runs = list(runs)
    for i in sorted(firsts, key=lambda i: _expected(runs[i])):
        run = runs[i]
        assert run.candidate is not None
        most = int(OVERTIME * run.max_epochs)
        epochs = min(most, run.candidate.epochs_within(run.seconds + left, run.folds))
        if epochs > run.epochs:
            left -= run.candidate.cost(epochs, run.folds) - run.seconds
            runs[i] = run.with_epochs(epochs)
    return runs


def _extra_seeds(
    chosen: list[tuple[Candidate, int]], left: float, folds: int, max_seeds: int
) -> tuple[list[PlannedRun], float]:
    """Seeds of the chosen runs while they fit; the seeds and the time left after them."""
    extra = []
    for seed in range(1, max_seeds):
        for c, epochs in chosen:
            if c.student:
                continue
            need = c.cost(epochs, folds)
            if need <= left:
                extra.append(_run(c, epochs, seed, folds))
                left -= need
    return extra, left


def _run(c: Candidate, epochs: int, seed: int, folds: int) -> PlannedRun:
    name = c.entry.name if seed == 0 else f"{c.entry.name}-seed{seed}"
    return PlannedRun(
        name, c.entry.family, dict(c.entry.overrides), epochs, seed, c.cost(epochs, folds),
        folds, c, c.student,
    )  # fmt: skip


__all__ = [
    "CLEAR_GAIN", "FOLD_CHOICES", "MAX_PACE", "MAX_SEARCH_TRIALS", "MAX_SHARE_OF_BEST",
    "MIN_SEARCH_TRIALS", "OVERTIME", "SAFETY", "SEED_SHARE", "WIDEST_SEARCH_TRIALS", "Candidate",
    "Plan", "PlannedRun", "PlannedSearch", "affordable_epochs", "best_expected",
    "longest_epochs", "no_stack", "plan_runs", "replan_search", "seed_for_time_left",
]  # fmt: skip
