"""Terminal bars for the long single steps under way: a fold's or a trial's epochs, a fetch step
(download, unpack, parse: no total, so a pulsing bar and its time), the stack's steps.

Why: `kit run`'s stage table says which stage runs, not whether a 20-minute fold is moving.
`StepBars` is a rich renderable fed by the same events as every view; `kit run` and `kit demo`
draw it under their table (kit.cli.tables.PipelineView), `kit fetch` on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

if TYPE_CHECKING:
    from kit.progress import Event

Key = tuple[Any, ...]


class StepBars:
    """One bar per step under way; a step's bar goes when it ends. Use as a context manager
    to draw the bars alone (transient), or render it inside another live view."""

    def __init__(self, console: Console | None = None):
        self.progress = Progress(
            TextColumn("  {task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self.tasks: dict[Key, TaskID] = {}

    def __enter__(self) -> StepBars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def __rich__(self) -> RenderableType:
        return self.progress.get_renderable()

    def __bool__(self) -> bool:
        return bool(self.tasks)

    def __call__(self, event: Event) -> None:
        detail = event.detail
        if event.stage == "train" and event.what == "fold" and detail is not None:
            key = ("fold", detail.run, detail.fold)
            self.close(key)
            if detail.status == "start":
                self.open(key, f"{_short_run(detail.run)}fold {detail.fold}")
        elif event.stage == "train" and event.what == "epoch" and detail is not None:
            label = f"{_short_run(detail.run)}fold {detail.fold}{_submodel(detail)}"
            self._epoch(("fold", detail.run, detail.fold), label, detail)
        elif event.stage == "tune" and detail is not None and hasattr(detail, "family"):
            self._trial(detail)
        elif event.stage in ("fetch", "stack") and event.what == "step":
            self._step(event)
        elif event.what == "done":
            self.close((event.stage,))

    def _step(self, event: Event) -> None:
        """A counted step moves its stage's bar on; an uncounted one (fetch: download, unpack,
        parse) gets a new pulsing bar, so its time is its own."""
        key, label = (event.stage,), f"{event.stage}: {event.text}"
        if event.total and key in self.tasks:
            count = f"{event.done or 0:.0f}/{event.total:.0f}"
            self.progress.update(
                self.tasks[key], description=label, completed=event.done or 0,
                total=event.total, count=count,
            )  # fmt: skip
        else:
            self.open(key, label, event.done, event.total)

    def _trial(self, tune: Any) -> None:
        """A tuning trial's fold 0: its epochs, from its start to its end."""
        key = ("trial", tune.family, tune.trial)
        if tune.kind == "trial":
            self.open(key, f"{tune.family} trial {tune.trial}")
        elif tune.kind == "epoch" and tune.epoch is not None:
            self._epoch(key, f"{tune.family} trial {tune.trial}{_submodel(tune.epoch)}", tune.epoch)
        elif tune.kind == "trial_end":
            self.close(key)

    def _epoch(self, key: Key, label: str, report: Any) -> None:
        """A fold's epochs: x/y, the latest validation score and the best."""
        if key not in self.tasks:
            self.open(key, label)
        count = f"{report.epoch}/{report.epochs} ep  val {report.val_score:.4f}"
        self.progress.update(
            self.tasks[key],
            description=label,
            completed=report.epoch,
            total=report.epochs,
            count=f"{count} (best {report.best_score:.4f})",
        )

    def open(
        self, key: Key, label: str, done: float | None = None, total: float | None = None
    ) -> None:
        """A bar for a step: counted when `total` is known, else pulsing."""
        self.close(key)
        count = "" if total is None else f"{done or 0:.0f}/{total:.0f}"
        self.tasks[key] = self.progress.add_task(
            label, total=total, completed=done or 0, count=count
        )

    def close(self, key: Key) -> None:
        task = self.tasks.pop(key, None)
        if task is not None:
            self.progress.remove_task(task)

    def clear(self) -> None:
        for key in list(self.tasks):
            self.close(key)


def _submodel(report: Any) -> str:
    """A sub-model's name after its fold (a network per keypoint subset); nothing for main."""
    return "" if report.submodel == "main" else f" {report.submodel}"


def _short_run(run: str) -> str:
    """`lenet-4f0c2a9e1b3d` as `lenet-4f0c `: enough to tell runs apart on one line."""
    if not run:
        return ""
    family, _, digest = run.rpartition("-")
    return f"{family}-{digest[:4]} " if family else f"{run} "
