"""`kit run`'s and `kit demo`'s live view across the stages, and their final result."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kit.cli.bars import StepBars
from kit.cli.output import (
    fit_width,
    print_tables,
)
from kit.console import console, err_console

if TYPE_CHECKING:
    from kit.pipeline import PipelineResult
    from kit.progress import Event


from kit.cli.plan_view import plan_table
from kit.cli.tables import stack_summary, stack_table, submission_summary


class PipelineView:
    """One live table across the stages: state, time, and what the running stage is doing;
    under it a bar per long step under way (a fold's epochs, a fetch step: kit.cli.bars)."""

    def __init__(self, budget: float, stages: tuple[str, ...]):
        self.stages = stages
        self.budget = budget
        self.started = time.monotonic()
        self.state = dict.fromkeys(stages, "waiting")
        self.detail = dict.fromkeys(stages, "")
        self.begun: dict[str, float] = {}
        self.took: dict[str, float] = {}
        self.bars = StepBars()
        self.live = Live(self.render(), console=err_console, refresh_per_second=4, transient=False)

    def __enter__(self) -> PipelineView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bars.clear()
        self.live.update(self.render())
        self.live.__exit__(*exc)
        if not err_console.is_terminal:  # a captured Live leaves its last line open
            err_console.print()

    def render(self) -> Group:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for name, justify in (("stage", "left"), ("state", "left"), ("s", "right")):
            table.add_column(name, justify=justify)
        table.add_column("now", overflow="ellipsis", no_wrap=True, max_width=70)
        styles = {"waiting": "dim", "running": "yellow", "done": "green", "skipped": "dim"}
        for stage in self.stages:
            state = self.state[stage]
            seconds = self.took.get(stage)
            if seconds is None and stage in self.begun:
                seconds = time.monotonic() - self.begun[stage]
            table.add_row(
                stage,
                f"[{styles[state]}]{state}[/]",
                "" if seconds is None else f"{seconds:.0f}",
                Text(self.detail[stage], style="dim"),
            )
        elapsed = time.monotonic() - self.started
        head = Text(f"kit run: {elapsed:.0f} s of a {self.budget:.0f} s budget", style="bold")
        return Group(head, table, self.bars) if self.bars else Group(head, table)

    def __call__(self, event: Event) -> None:
        stage = event.stage
        self.bars(event)
        if stage not in self.state:  # a stage's inner work (folds inside "tune"): its bars
            self.live.update(self.render())
            return
        if event.what == "start":
            self.state[stage], self.begun[stage] = "running", time.monotonic()
        elif event.what == "done":
            self.state[stage] = "done"
            self.took[stage] = time.monotonic() - self.begun.get(stage, time.monotonic())
        elif event.text:
            self.detail[stage] = event.text
        if stage == "plan" and event.what == "planned":
            self.live.console.print(plan_table(event.detail, width=self.live.console.width))
        self.live.update(self.render())


def print_pipeline_result(result: PipelineResult, wide: bool = False) -> None:
    """The plan and stack tables (fitted to the terminal, or whole with `wide`), the stack and
    submission summaries, notes, and the time per stage."""
    width = fit_width(wide)
    tables = [stack_table(result.stack, width)]
    if result.run_plan is not None:
        tables.insert(0, plan_table(result.run_plan, result.plan_outcome, width))
    print_tables(*tables, wide=wide)
    console.print(stack_summary(result.stack))
    console.print(submission_summary(result.submission))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.stage_seconds.items())
    console.print(
        f"pipeline: {result.seconds:.0f} s of a {result.plan.budget:.0f} s budget ({stages}); "
        + _what_trained(result)
    )


def _what_trained(result: PipelineResult) -> str:
    """The planner's runs, or (kit run --epochs) the searched families."""
    if result.run_plan is not None:
        trained = sum(1 for row in result.plan_outcome if row.run_id)
        return f"{trained} planned models trained on {result.run_plan.folds} folds (plan.json)"
    return (
        f"families {', '.join(result.plan.families)}, "
        f"{result.plan.epochs or 'search-space'} epochs per trial"
    )
