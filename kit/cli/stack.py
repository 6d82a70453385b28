"""`kit stack COMP`: a meta-learner per keypoint coordinate over the runs' OOF (kit.stack)."""

from __future__ import annotations

from typing import Annotated

import typer

from kit.cli.app import app, comma_list
from kit.cli.bars import StepBars
from kit.cli.output import (
    Format,
    FormatOption,
    WideOption,
    check_format,
    fit_width,
    print_tables,
    write_csv,
    write_json,
)
from kit.cli.plain import progress_view
from kit.cli.tables import stack_data, stack_frame, stack_summary, stack_table
from kit.competition import load_competition
from kit.console import console, err_console
from kit.errors import KitError


def parse_features(text: str | None) -> frozenset[str]:
    from kit.stack import FEATURE_SETS

    chosen = frozenset(comma_list(text) or ())
    unknown = sorted(chosen - set(FEATURE_SETS))
    if unknown:
        raise KitError(
            f"--features: unknown {', '.join(unknown)}", hint=f"valid: {', '.join(FEATURE_SETS)}"
        )
    return chosen


@app.command("stack")
def stack_command(
    competition: Annotated[str, typer.Argument(help="Competition name, e.g. facial-keypoints.")],
    runs: Annotated[
        str | None,
        typer.Option("--runs", help="Comma list of run ids (default: the best per family)."),
    ] = None,
    per_family: Annotated[
        int, typer.Option("--per-family", min=1, help="Best runs per family by default.")
    ] = 2,
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            help="Extra LightGBM features, comma list: coords (the other coordinates' "
            "predictions), diffs (each model minus the blend, and their spread), image "
            "(brightness, contrast, gradients, asymmetry).",
        ),
    ] = None,
    fmt: FormatOption = Format.table,
    wide: WideOption = False,
) -> None:
    """Stack finished runs: per coordinate a ridge and a LightGBM meta-model on their OOF."""
    from kit.stack import stack
    from kit.store import load_run

    check_format(fmt, wide)
    comp = load_competition(competition)
    chosen = [load_run(comp, run_id) for run_id in comma_list(runs)] if runs else None
    view = progress_view(lambda: StepBars(err_console), stdout_ok=fmt is Format.table)
    with view as on_event:
        result = stack(
            comp,
            chosen,
            per_family=per_family,
            features=parse_features(features),
            on_event=on_event,
            warn=lambda text: err_console.print(f"[yellow]{text}[/]"),
        )
    if result.reused:
        said = console if fmt is Format.table else err_console  # csv and json: data alone
        said.print(f"[green]reusing finished stack {result.stack_id}[/] (same runs, settings)")
    if fmt is Format.csv:
        write_csv(stack_frame(result))
    elif fmt is Format.json:
        write_json(stack_data(result))
    else:
        print_tables(stack_table(result, fit_width(wide)), wide=wide)
        console.print(stack_summary(result))
