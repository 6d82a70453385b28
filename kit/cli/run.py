"""`kit run [COMP]`: fetch -> folds -> tune -> stack -> submit in one go (kit.pipeline).

Without a competition it runs `kit demo`: the embedded synthetic-faces competition.
"""

from __future__ import annotations

import time
from typing import Annotated

import optuna
import typer
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kit.cli.app import app
from kit.competition import load_competition
from kit.console import console, err_console
from kit.errors import KitError
from kit.pipeline import STAGES, PipelineEvent, PipelineResult, parse_budget, run_pipeline

DEFAULT_BUDGET = "20m"


class PipelineView:
    """One live table across the stages: state, time, and what the running stage is doing."""

    def __init__(self, budget: float):
        self.budget = budget
        self.started = time.monotonic()
        self.state = dict.fromkeys(STAGES, "waiting")
        self.detail = dict.fromkeys(STAGES, "")
        self.begun: dict[str, float] = {}
        self.took: dict[str, float] = {}
        self.live = Live(self.render(), console=err_console, refresh_per_second=4, transient=False)

    def __enter__(self) -> PipelineView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
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
        for stage in STAGES:
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
        return Group(head, table)

    def __call__(self, event: PipelineEvent) -> None:
        stage = event.stage
        if event.status == "start":
            self.state[stage], self.begun[stage] = "running", time.monotonic()
        elif event.status == "done":
            self.state[stage] = "done"
            self.took[stage] = time.monotonic() - self.begun.get(stage, time.monotonic())
        if event.text and event.status in ("progress", "skipped"):
            self.detail[stage] = event.text
        self.live.update(self.render())


def print_result(result: PipelineResult) -> None:
    # Imported here: importing another command module registers its command, and the help
    # lists commands in the order they register (alphabetical, from kit/cli/__init__.py).
    from kit.cli.stack import stack_summary, stack_table
    from kit.cli.submit import submission_summary

    console.print(stack_table(result.stack))
    console.print(stack_summary(result.stack))
    console.print(submission_summary(result.submission))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.stage_seconds.items())
    console.print(
        f"pipeline: {result.seconds:.0f} s of a {result.plan.budget:.0f} s budget ({stages}); "
        f"families {', '.join(result.plan.families)}, "
        f"{result.plan.epochs or 'search-space'} epochs per trial"
    )


def _families(text: str | None) -> list[str] | None:
    return [f.strip() for f in text.split(",") if f.strip()] if text else None


@app.command("run")
def run_command(
    competition: Annotated[
        str | None,
        typer.Argument(help="Competition name; none runs the embedded demo (`kit demo`)."),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option("--budget", help="Time for the whole pipeline: 90s, 20m, 2h (default 20m)."),
    ] = None,
    upload: Annotated[
        bool, typer.Option("--upload", help="Upload the submission (default: a dry run).")
    ] = False,
    source: Annotated[
        str | None,
        typer.Option("--from", help="Competition data zip or folder (default: cache, Kaggle)."),
    ] = None,
    families: Annotated[
        str | None,
        typer.Option("--families", help="Model families, comma list (default: by device)."),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option("--epochs", min=1, help="Epochs per trial (default: by budget on a CPU)."),
    ] = None,
    folds: Annotated[
        int | None, typer.Option("--folds", min=2, help="K of a new folds file (default 5).")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto (default), cpu, cuda, cuda:N or mps.")
    ] = None,
) -> None:
    """Fetch, folds, tune, stack and submit within a time budget (dry run unless --upload)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the live view says it
    if competition is None:
        if upload or source:
            raise KitError("the demo needs no --upload or --from", hint="name a competition")
        from kit.cli.demo import run_demo_command

        run_demo_command(budget=None if budget is None else parse_budget(budget))
        return
    comp = load_competition(competition)
    seconds = parse_budget(budget or DEFAULT_BUDGET)
    with PipelineView(seconds) as view:
        result = run_pipeline(
            comp,
            seconds,
            upload=upload,
            source=source,
            report=view,
            families=_families(families),
            epochs=epochs,
            folds=folds,
            device=device,
        )
    print_result(result)
