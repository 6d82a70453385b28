"""One trial: fold 0 of the shared folds file through `train_run`, its per-epoch scores fed to
the pruner at 10 %..100 % of its schedule; and the search loop that runs trials to a target."""

from __future__ import annotations

import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from kit.competition import Competition
from kit.errors import KitError
from kit.models import get_family
from kit.progress import Event, OnEvent
from kit.store import RunResult
from kit.training.loop import EpochReport
from kit.training.queue import FoldQueue, InProcessExecutor
from kit.training.runs import open_run, run_identity
from kit.training.spec import RunSpec
from kit.tuning.studies import FINISHED, PROGRESS_MARKS, best_value, count_trials, quiet_optuna
from kit.tuning.table import key_params

# Trial errors that fail one trial but not the study: divergence, a bad config, GPU OOM.
# (torch.cuda's name for it: the top-level alias of the same class needs torch >= 2.5.)
TRIAL_ERRORS = (KitError, torch.cuda.OutOfMemoryError)


@dataclass
class TuneEvent:
    """Progress of `tune`; ``str(event)`` is a one-line message.

    kind: "search" (a family's search starts or its counts change: done/target), "trial"
    (a trial starts), "epoch" (fold 0 of a trial finished an epoch), "trial_end" (state,
    value, and for the logs its key params in brief and its seconds), "final" (a best trial
    starts training on all folds), "fold" (one of its folds finished: done of target folds,
    state, value, seconds), "final_end" (its CV score).
    """

    kind: str
    family: str
    trial: int | None = None
    done: int = 0
    target: int | None = None
    best: float | None = None
    epoch: EpochReport | None = None
    value: float | None = None
    state: str = ""
    text: str = ""
    params: str = ""  # trial_end: key_params, e.g. "ep=8/8 lr=0.003 bs=64"
    seconds: float | None = None  # trial_end, fold: how long it ran

    def __str__(self) -> str:
        return f"{self.family}: {self.text}" if self.text else f"{self.family}: {self.kind}"

    def event(self) -> Event:
        """As the one progress event (this record is its detail)."""
        return Event("tune", self.kind, self.done, self.target, str(self), self)


class FixedParamsTrial:
    """An optuna.Trial whose `fixed` params (e.g. ``epochs`` under ``--epochs``) are not
    searched: the family's search space gets the fixed value, and Optuna never sees the
    param (a value outside the declared range could not be stored as one)."""

    def __init__(self, trial: optuna.Trial, fixed: dict[str, Any]):
        self._trial = trial
        self._fixed = fixed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trial, name)

    def suggest_float(self, name: str, *args: Any, **kwargs: Any) -> float:
        if name in self._fixed:
            return self._fixed[name]
        return self._trial.suggest_float(name, *args, **kwargs)

    def suggest_int(self, name: str, *args: Any, **kwargs: Any) -> int:
        if name in self._fixed:
            return self._fixed[name]
        return self._trial.suggest_int(name, *args, **kwargs)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        if name in self._fixed:
            return self._fixed[name]
        return self._trial.suggest_categorical(name, choices)


class FoldZeroReporter:
    """`train_run`'s on_event hook: reports fold 0's best score at each 10 % of the schedule
    and raises TrialPruned when the pruner says so, or when the trial's remaining epochs, at
    its own pace so far, would end after `deadline` (a `clock()` time: the --timeout).

    Optuna checks its timeout only between trials, so without the deadline one slow trial
    (a stride-1 heatmap net on a CPU takes 100x the default's time) overruns --timeout by
    its whole length; with it, the overrun is at most one epoch."""

    def __init__(
        self,
        trial: optuna.Trial,
        family: str,
        on_event: OnEvent,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.trial = trial
        self.family = family
        self.on_event = on_event
        self.deadline = deadline
        self.clock = clock
        self.submodel: str | None = None
        self.reported: set[int] = set()
        self.epochs_run = 0
        self.epoch_seconds = 0.0

    def __call__(self, event: Event) -> None:
        if event.what != "epoch":
            return
        epoch: EpochReport = event.detail
        if self.submodel is None:
            self.submodel = epoch.submodel
        if epoch.fold != 0 or epoch.submodel != self.submodel:
            return  # one value per step: only fold 0's (first) network reports
        self.epochs_run = epoch.epoch
        self.epoch_seconds += epoch.seconds
        self.on_event(
            TuneEvent(
                "epoch",
                self.family,
                self.trial.number,
                epoch=epoch,
                text=f"trial {self.trial.number} epoch {epoch.epoch}/{epoch.epochs} "
                f"val {epoch.val_score:.4f}",
            ).event()
        )
        if math.isfinite(epoch.best_score):  # a NaN score would make the pruner prune at once
            self._feed_pruner(epoch)
        if epoch.epoch < epoch.epochs:
            self._stop_at_deadline(epoch)

    def _feed_pruner(self, epoch: EpochReport) -> None:
        progress = 100 * epoch.epoch / epoch.epochs
        marks = [m for m in PROGRESS_MARKS if m <= progress + 1e-9 and m not in self.reported]
        for mark in marks:
            self.trial.report(epoch.best_score, mark)
            self.reported.add(mark)
        if marks and epoch.epoch < epoch.epochs and self.trial.should_prune():
            self.trial.set_user_attr("epochs_run", epoch.epoch)
            raise optuna.TrialPruned(
                f"epoch {epoch.epoch}/{epoch.epochs}: best val {epoch.best_score:.4f}"
            )

    def _stop_at_deadline(self, epoch: EpochReport) -> None:
        if self.deadline is None:
            return
        pace = self.epoch_seconds / epoch.epoch
        late = self.clock() + pace * (epoch.epochs - epoch.epoch) - self.deadline
        if late > 0:
            self.trial.set_user_attr("epochs_run", epoch.epoch)
            self.trial.set_user_attr("stopped_by", "timeout")
            raise optuna.TrialPruned(
                f"epoch {epoch.epoch}/{epoch.epochs}: the rest would end {late:.0f} s "
                "after --timeout"
            )


def trial_spec(family: str, overrides: dict[str, Any]) -> RunSpec:
    """What a trial trains: fold 0 of the config (its epochs among the overrides)."""
    return RunSpec(family, overrides, folds=1)


def discard_unfinished_run(comp: Competition, spec: RunSpec) -> None:
    """Remove the folder of a pruned or failed trial if no fold in it ever finished."""
    folder = run_identity(comp, spec).folder(comp)
    if folder.path.is_dir() and not folder.done_folds() and not folder.manifest.exists():
        shutil.rmtree(folder.path, ignore_errors=True)


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def make_objective(
    comp: Competition,
    family: str,
    *,
    epochs: int | None,
    device: str | None,
    on_event: OnEvent,
    deadline: float | None = None,
) -> Callable[[optuna.Trial], float]:
    """Fold 0 of one trial's config; trials that would end after `deadline` (time.monotonic
    time) are pruned at an epoch's end."""
    space = get_family(family).search_space
    fixed = {"epochs": epochs} if epochs is not None else {}

    def objective(trial: optuna.Trial) -> float:
        overrides = {**space(FixedParamsTrial(trial, fixed)), **fixed}
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("worker", worker_name())
        on_event(
            TuneEvent("trial", family, trial.number, text=f"trial {trial.number} starts").event()
        )
        reporter = FoldZeroReporter(trial, family, on_event, deadline)
        spec = trial_spec(family, overrides)
        try:
            run = open_run(comp, spec, device=device, on_event=reporter, pictures=False)
            result = FoldQueue(InProcessExecutor()).train_one(run)
        except BaseException as exc:  # pruned, failed or interrupted: fold 0 never finished
            discard_unfinished_run(comp, spec)
            if isinstance(exc, KitError | ValueError):
                trial.set_user_attr("error", str(exc))
            elif isinstance(exc, KeyboardInterrupt):
                trial.set_user_attr("error", "interrupted")
            if isinstance(exc, ValueError):  # the metrics reject a diverged net's NaN output
                raise KitError(f"trial {trial.number} failed: {exc}") from exc
            raise
        trial.set_user_attr("run_id", result.run_id)
        trial.set_user_attr("epochs_run", reporter.epochs_run or _fold0_epochs(result))
        # What fold 0 took to train, also for a reused run (whose trial lasted 0 s): the
        # search judges by it whether a trial as cheap would still fit (keep_searching).
        trial.set_user_attr("fold_seconds", float(result.manifest.fold_seconds.get("0", 0.0)))
        return result.cv_score

    return objective


def _fold0_epochs(result: RunResult) -> int:
    """Epochs fold 0 ran (when the run was reused, the callback saw none)."""
    return int(max(result.manifest.fold_epochs.get("0", {"": 0}).values()))


def keep_searching(study: optuna.Study, trial: FrozenTrial, left: float) -> bool:
    """After `trial`, with `left` seconds to the timeout: False once a trial was stopped by
    the timeout and no complete trial at its epochs trained fold 0 in under `left`. One
    costly configuration (width 48 at stride 2: 12x the default's epoch) that does not fit
    says nothing of a cheaper one that would."""
    if trial.user_attrs.get("stopped_by") != "timeout":
        return True
    epochs = trial.user_attrs.get("overrides", {}).get("epochs")
    return any(
        0 < done.user_attrs.get("fold_seconds", 0.0) < left
        for done in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if done.user_attrs.get("overrides", {}).get("epochs") == epochs
    )


def search(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    family: str,
    target: int | None,
    timeout: float | None,
    on_event: OnEvent,
) -> None:
    """Run trials until the study has `target` finished trials (all workers) or time is up."""

    def status(kind: str = "search", text: str = "") -> TuneEvent:
        done = count_trials(study)
        return TuneEvent(kind, family, done=done, target=target, best=best_value(study), text=text)

    def after_trial(study: optuna.Study, trial: FrozenTrial) -> None:
        value = f" {trial.value:.4f}" if trial.value is not None else ""
        event = status("trial_end", f"trial {trial.number} {trial.state.name.lower()}{value}")
        event.trial, event.state, event.value = trial.number, trial.state.name, trial.value
        params = trial.user_attrs.get("overrides", trial.params)
        event.params = key_params(params, trial.user_attrs.get("epochs_run"))
        event.seconds = trial.duration.total_seconds() if trial.duration else None
        on_event(event.event())
        # Trials other workers are running now will finish too: stop when they make the target.
        running = count_trials(study, (*FINISHED, TrialState.RUNNING))
        if target is not None and running >= target:
            study.stop()
        if ends is not None and not keep_searching(study, trial, ends - time.monotonic()):
            study.stop()

    ends = None if timeout is None else time.monotonic() + timeout
    with quiet_optuna():  # a killed worker's trial: FAIL (and re-queued) before counting
        optuna.storages.fail_stale_trials(study)
    remaining = None if target is None else target - count_trials(study)
    on_event(
        status(text=f"{count_trials(study)} finished trials, target {target or 'none'}").event()
    )
    if remaining is not None and remaining <= 0:
        return
    if timeout is not None and timeout <= 0:
        return
    with quiet_optuna():
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=timeout,
            callbacks=[after_trial],
            catch=TRIAL_ERRORS,
            gc_after_trial=False,
        )


def check_trials_ran(study: optuna.Study, family: str, finished_before: set[int]) -> None:
    """Every trial of this run failed: stop with the first error instead of a table of FAILs."""
    ours = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and t.number not in finished_before
    ]
    if ours and all(t.state == TrialState.FAIL for t in ours):
        error = next((t.user_attrs["error"] for t in ours if "error" in t.user_attrs), None)
        raise KitError(
            f"every {family} trial failed ({len(ours)})" + (f": {error}" if error else ""),
            hint="see the warnings above, or `kit tune COMP --show`",
        )
