"""Progress as plain lines, for output that is not a terminal (a log file, nohup, CI, a notebook).

Why: rich's live views only draw to a terminal; redirected, they print nothing until the end
(`kit run > run.log` stayed empty for 29 minutes). `PlainProgress` renders the same events as
one flushed line each: stage starts and ends, the plan, each planned run, each fold and each
trial, with the elapsed time and the budget left, e.g.

    [00:01:23 | 28:37 left] train: lenet-4f0c2a9e1b3d fold 2 (3/5) done: RMSE 2.0100 (95 s)

Per-epoch and per-step events are thinned to one line every `every` seconds.
`progress_view` picks the live view or the lines for a command (see `plain_stream`).
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from kit.console import console, err_console

if TYPE_CHECKING:
    from kit.progress import Event, OnEvent

EPOCH_LINE_SECONDS = 30.0  # at most one epoch (or stack step) line this often
SECONDS = re.compile(r"\d+ s")  # a stage's "done" text that only says its time
# The start of a line PlainProgress wrote: "[00:01:23] " or "[00:01:23 | 28:37 left] ".
PROGRESS_LINE = re.compile(r"\[\d{2,}:\d{2}:\d{2}( \| [0-9:]+ (left|over))?\] ")


def clock_text(seconds: float) -> str:
    """Elapsed time as HH:MM:SS (sorts and aligns in a log)."""
    whole = int(max(0.0, seconds))
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def left_text(seconds: float) -> str:
    """The budget left as M:SS or H:MM:SS; past the budget, how far over it."""
    whole = math.ceil(abs(seconds))
    hours, rest = divmod(whole, 3600)
    minutes = f"{rest // 60:02d}" if hours else f"{rest // 60}"
    short = f"{hours}:" * bool(hours) + f"{minutes}:{rest % 60:02d}"
    return f"{short} over" if seconds < 0 else f"{short} left"


class PlainProgress:
    """An `OnEvent` that writes one flushed line per event worth a line to `stream`.

    `budget` (seconds, optional) adds the time left to each line; `metric` names the scores;
    `clock` is injectable so tests can run it on a fake clock."""

    def __init__(
        self,
        stream: TextIO,
        *,
        budget: float | None = None,
        metric: str = "",
        clock: Callable[[], float] = time.monotonic,
        every: float = EPOCH_LINE_SECONDS,
    ):
        self.stream = stream
        self.budget = budget
        self.metric = metric.upper() or "score"
        self.clock = clock
        self.every = every
        self.started = clock()
        self.begun: dict[str, float] = {}
        self.last_chatty: dict[tuple[str, str], float] = {}
        self.last_text: dict[tuple[str, str, str], str] = {}

    def __call__(self, event: Event) -> None:
        line = self.line(event)
        if line:
            self.write(line)

    def write(self, text: str) -> None:
        """One stamped line, flushed at once: a log read while kit runs is never behind."""
        self.stream.write(f"{self.stamp()} {text}\n")
        self.stream.flush()

    def stamp(self) -> str:
        elapsed = self.clock() - self.started
        if self.budget is None:
            return f"[{clock_text(elapsed)}]"
        return f"[{clock_text(elapsed)} | {left_text(self.budget - elapsed)}]"

    # ---------------------------------------------------------------- which line

    def line(self, event: Event) -> str | None:
        """The event's line, or None when it is not worth one (thinned or repeated)."""
        if event.what == "start":
            self.begun[event.stage] = self.clock()
            return f"{event.stage} starts" + (f": {event.text}" if event.text else "")
        if event.what == "done":
            return self._done(event)
        special = self._special(event)
        if special is not None:
            return special
        if self._thinned(event):
            return None
        return f"{event.stage}: {self._text(event)}"

    def _special(self, event: Event) -> str | None:
        """Lines with a shape of their own: the plan, each fold, each trial's end."""
        detail, kind = event.detail, (event.stage, event.what)
        if detail is None:
            return None
        if kind == ("plan", "planned"):
            return _plan_line(detail, event.text)
        if kind == ("train", "fold"):
            run = f"{detail.run} " if detail.run else ""
            fold = self._fold(
                detail.fold, detail.folds, detail.status, detail.score, detail.seconds
            )
            return f"train: {run}{fold}"
        if kind == ("tune", "fold"):
            fold = self._fold(
                detail.done, detail.target, detail.state, detail.value, detail.seconds
            )
            return f"tune: {detail.family} trial {detail.trial} {fold}"
        if kind == ("tune", "trial_end"):
            return self._trial_end(detail)
        return None

    def _done(self, event: Event) -> str:
        """The stage's time (measured here from its start line) and what it said, if more."""
        begun = self.begun.pop(event.stage, None)
        said = "" if SECONDS.fullmatch(event.text) else event.text
        if begun is not None:
            took = f" ({self.clock() - begun:.0f} s)"
        else:
            took, said = (f" ({event.text})", "") if event.text and not said else ("", said)
        return f"{event.stage} done{took}" + (f": {said}" if said else "")

    def _fold(
        self, fold: int, folds: int | None, status: str, score: float | None, seconds: float | None
    ) -> str:
        """`fold 2 (3/5) done: RMSE 2.0100 (95 s)`: the fold's index as the tables print it
        (from 0), its place among the folds, and its score and time when it is done."""
        where = f"fold {fold}" + (f" ({fold + 1}/{folds})" if folds else "")
        if status == "done":
            said = "" if score is None else f": {self.metric} {score:.4f}"
            took = "" if seconds is None else f" ({seconds:.0f} s)"
            return f"{where} done{said}{took}"
        if status == "resumed":
            return f"{where} finished earlier, reused"
        return f"{where} {'starts' if status in ('start', '') else status}"

    def _trial_end(self, trial: Any) -> str:
        """A finished trial: family, number, state, fold-0 score, params in brief, seconds."""
        state = (trial.state or "ended").lower()
        score = "" if trial.value is None else f": {self.metric} {trial.value:.4f}"
        brief = [trial.params] if trial.params else []
        if trial.seconds is not None:
            brief.append(f"{trial.seconds:.0f} s")
        said = f" ({'; '.join(brief)})" if brief else ""
        return f"tune: {trial.family} trial {trial.trial} {state}{score}{said}"

    def _text(self, event: Event) -> str:
        """Any other event: its own text; an epoch's run, fold, score and best score."""
        detail = event.detail
        if event.what == "epoch" and hasattr(detail, "val_score"):
            run = f"{detail.run} " if detail.run else ""
            return f"{run}{detail.line()} (best {detail.best_score:.4f})"
        return str(event)

    def _thinned(self, event: Event) -> bool:
        """Epochs and counted steps: the first and one every `every` seconds; any other line
        only when it says something new (a heartbeat repeats itself)."""
        if event.what == "epoch" or (event.what == "step" and event.total):
            return self._too_soon(event)
        key = (event.stage, event.what, str(getattr(event.detail, "family", "")))
        text = self._text(event)
        if self.last_text.get(key) == text:
            return True
        self.last_text[key] = text
        return False

    def _too_soon(self, event: Event) -> bool:
        """Whether an epoch or step line came less than `every` seconds ago. A stage's last
        step always prints (the stack's "picking per keypoint"); a fold's last epoch need not:
        the fold's own line follows."""
        key, now = (event.stage, event.what), self.clock()
        last = self.last_chatty.get(key)
        counted = event.total is not None and event.done is not None
        final = event.what == "step" and counted and event.done >= event.total
        if last is not None and now - last < self.every and not final:
            return True
        self.last_chatty[key] = now
        return False


def _plan_line(plan: Any, text: str) -> str:
    """The plan in one line: its runs, their epochs, and the time they should take."""
    runs = getattr(plan, "runs", None)
    if runs is None:
        return f"plan: {text}"
    names = ", ".join(f"{r.name} ({r.epochs} ep)" for r in runs)
    return f"plan: {text}, about {plan.estimated_seconds:.0f} s: {names}"


def fan_out(*callbacks: OnEvent) -> OnEvent:
    """One `OnEvent` that calls each of `callbacks` in turn."""

    def each(event: Event) -> None:
        for callback in callbacks:
            callback(event)

    return each


def plain_stream(*, stdout_ok: bool = True) -> TextIO | None:
    """Where plain progress lines go, or None where a live view alone does.

    Not a terminal on stderr (nohup, CI, a notebook, `2> log`): stderr, where the live view
    would have drawn. stderr a terminal but stdout not (`kit run > run.log`): stdout, so the
    log follows the run while the terminal keeps its live view; never for a command whose
    stdout carries data (`stdout_ok=False`: `--format csv|json`)."""
    if not err_console.is_terminal:
        return sys.stderr
    if stdout_ok and not console.is_terminal:
        return sys.stdout
    return None


@contextmanager
def progress_view(
    live: Callable[[], AbstractContextManager[Any]],
    *,
    budget: float | None = None,
    metric: str = "",
    stdout_ok: bool = True,
) -> Iterator[OnEvent]:
    """The `on_event` of a command: its live view (`live()`, entered here) on a terminal,
    plain lines where output is not one (`plain_stream`), or both."""
    stream = plain_stream(stdout_ok=stdout_ok)
    if stream is sys.stderr:  # no terminal to draw on: the lines replace the live view
        yield PlainProgress(stream, budget=budget, metric=metric)
        return
    with live() as view:
        if stream is None:
            yield view
        else:
            yield fan_out(view, PlainProgress(stream, budget=budget, metric=metric))
