"""`kit fetch COMP`: download (or --from a zip/folder), verify, unpack and cache the data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kit.cli.app import app
from kit.cli.bars import StepBars
from kit.cli.plain import progress_view
from kit.competition import load_competition
from kit.console import console, err_console


@app.command("fetch")
def fetch_command(
    competition: Annotated[str, typer.Argument(help="Competition name, e.g. facial-keypoints.")],
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="A local competition zip or folder (offline; the only way for a competition "
            "without a Kaggle page).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-download and re-parse.")] = False,
) -> None:
    """Download the competition data, verify it, unpack it safely and cache it as arrays."""
    from kit.fetch import fetch

    comp = load_competition(competition)
    with progress_view(lambda: StepBars(err_console)) as on_event:
        result = fetch(comp, source, force=force, on_event=on_event)
    if result.status == "up to date":
        console.print(f"[green]{comp.name} is up to date[/] (nothing changed in {result.source})")
    else:
        took = f"{result.seconds:.1f} s"
        console.print(f"[green]fetched {comp.name}[/] from {result.source} in {took}")
    console.print(
        f"train rows {result.train_rows} (complete {result.complete_rows}), "
        f"test rows {result.test_rows}; cache: {comp.workspace.cache}"
    )
