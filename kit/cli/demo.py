"""`kit demo`: the whole pipeline on kit's own synthetic-faces competition (kit.demo).

No Kaggle account, no data: the README's first command. The defaults finish in about
3 minutes on 2 CPU cores; the size options exist for quick checks (and the tests).
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import TYPE_CHECKING, Annotated

import typer

from kit.cli.app import app
from kit.cli.output import WideOption
from kit.cli.pipeline_view import PipelineView, print_pipeline_result
from kit.cli.plain import progress_view
from kit.cli.tables import frame_table
from kit.console import console

if TYPE_CHECKING:
    from kit.demo import DemoResult


def print_demo(result: DemoResult, wide: bool = False) -> None:
    print_pipeline_result(result.pipeline, wide=wide)
    table = result.table.rename(columns={"cv": "CV RMSE (OOF)", "test": "test RMSE"})
    table["method"] = table["method"].where(table["kind"] != "submission", "submission")
    caption = (
        "test RMSE: over the IdLookupTable rows, as Kaggle scores a submission; "
        f"submission: {result.pipeline.submission.path}"
    )
    console.print(
        frame_table(
            table,
            "Demo scores: cross-validation and the held-out test answers",
            floats="{:.4f}",
            caption=caption,
        )
    )
    from kit.demo import DEMO_NAME, demo_competition, stack_verdict
    from kit.report.build import REPORT_FILE

    console.print(stack_verdict(result.pipeline))
    console.print(
        f"[bold]The submission scores {result.test_score:.4f} RMSE on the demo's test answers.[/]"
    )
    report = demo_competition().workspace.root / REPORT_FILE
    console.print(f"See it all on one page: [bold]kit report {DEMO_NAME}[/] (writes {report})")


def run_demo_command(
    budget: float | None = None, wide: bool = False, **sizes: object
) -> DemoResult:
    """Run the demo with the default settings, changed by `budget` and `sizes`; print it
    (its tables whole with `wide`)."""
    import optuna

    from kit.demo import DemoSettings, demo_competition, run_demo
    from kit.pipeline import pipeline_stages

    settings = DemoSettings()
    changes = {k: v for k, v in sizes.items() if v is not None}
    if budget is not None:
        changes["budget"] = budget
    settings = dataclasses.replace(settings, **changes)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metric = demo_competition(settings.input_size).metric
    with progress_view(
        lambda: PipelineView(
            settings.budget, pipeline_stages(fixed_epochs=settings.epochs is not None)
        ),
        budget=settings.budget,
        metric=metric,
    ) as view:
        result = run_demo(settings, on_event=view)
    print_demo(result, wide=wide)
    return result


@app.command(
    "demo",
    help="Run kit run's pipeline (fetch, plan, folds, train, stack, submit) on a synthetic-faces "
    "competition that kit draws itself (no Kaggle account needed), then score the submission "
    "on its answers.",
)
def demo_command(
    budget: Annotated[
        str | None, typer.Option("--budget", help="Time for the pipeline (default 150s).")
    ] = None,
    fresh: Annotated[
        bool, typer.Option("--fresh", help="Delete the demo's work folder first.")
    ] = False,
    train_rows: Annotated[
        int | None, typer.Option("--train-rows", min=12, help="Training faces to draw (300).")
    ] = None,
    test_rows: Annotated[
        int | None, typer.Option("--test-rows", min=3, help="Test faces to draw (60).")
    ] = None,
    size: Annotated[int | None, typer.Option("--size", min=24, help="Image side (96).")] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            "--epochs", min=1, help="Fixed epochs per trial instead of the planner (planner)."
        ),
    ] = None,
    folds: Annotated[
        int | None, typer.Option("--folds", min=2, help="Number of folds (3).")
    ] = None,
    families: Annotated[
        str | None, typer.Option("--families", help="Comma list (the portfolio's).")
    ] = None,
    wide: WideOption = False,
) -> None:
    from kit.demo import demo_competition
    from kit.pipeline import parse_budget

    if fresh:
        shutil.rmtree(demo_competition().workspace.root, ignore_errors=True)
    run_demo_command(
        budget=None if budget is None else parse_budget(budget),
        n_train=train_rows,
        n_test=test_rows,
        input_size=size,
        epochs=epochs,
        folds=folds,
        families=tuple(f.strip() for f in families.split(",")) if families else None,
        wide=wide,
    )
