"""`kit run [COMP]`: fetch -> folds -> tune -> pseudo -> stack -> submit in one go (kit.pipeline).

Without a competition it runs `kit demo`: the embedded synthetic-faces competition.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

import typer

from kit.cli.app import app, comma_list
from kit.cli.demo import run_demo_command
from kit.cli.output import WideOption
from kit.cli.pipeline_view import PipelineView, print_pipeline_result
from kit.cli.plain import progress_view
from kit.competition import load_competition
from kit.console import err_console
from kit.errors import KitError

DEFAULT_BUDGET = "20m"


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
    pseudo: Annotated[
        bool,
        typer.Option(
            "--pseudo/--no-pseudo",
            help="Plan a student of the best run on pseudo labels from a stack of the others "
            "when the budget allows (kit pseudo). Off by default: at 30 CPU minutes on "
            "fkd-proxy it scored public 1.636 against 1.581 without (docs/benchmarks.md).",
        ),
    ] = False,
    wide: WideOption = False,
) -> None:
    """Fetch, folds, tune, stack and submit within a time budget (dry run unless --upload)."""
    import optuna

    from kit.pipeline import parse_budget, pipeline_stages, run_pipeline

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the live view says it
    if competition is None:
        if upload or source:
            raise KitError("the demo needs no --upload or --from", hint="name a competition")
        run_demo_command(budget=None if budget is None else parse_budget(budget), wide=wide)
        return
    comp = load_competition(competition)
    seconds = parse_budget(budget or DEFAULT_BUDGET)
    if upload and not comp.on_kaggle:
        err_console.print(
            f"[yellow]warning:[/] --upload: {comp.name} has no Kaggle page, so there is nothing "
            "to upload to; the submission is written and kept",
            soft_wrap=True,
        )
    stages = pipeline_stages(fixed_epochs=epochs is not None)
    live_view = partial(PipelineView, seconds, stages)
    with progress_view(live_view, budget=seconds, metric=comp.metric) as view:
        result = run_pipeline(
            comp,
            seconds,
            upload=upload,
            source=source,
            on_event=view,
            families=comma_list(families),
            epochs=epochs,
            folds=folds,
            device=device,
            pseudo=pseudo,
        )
    print_pipeline_result(result, wide=wide)
