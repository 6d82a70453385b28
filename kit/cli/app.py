"""The Typer app that every command module registers on."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from kit.workspace import WORK_ENV

app = typer.Typer(
    name="kit",
    help="Kaggle competition kit: fetch, eda, folds, train, tune, stack, submit, track, pseudo, "
    "report, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


def comma_list(text: str | None) -> list[str] | None:
    """A comma-separated option as its non-empty, stripped items; None when not given."""
    return [item.strip() for item in text.split(",") if item.strip()] if text else None


@app.callback()
def _root(
    work: Annotated[
        Path | None,
        typer.Option("--work", envvar=WORK_ENV, help="Root of the work folders (default ./work)."),
    ] = None,
) -> None:
    if work is not None:
        os.environ[WORK_ENV] = str(work)
