"""`kit folds COMP --k 5 --seed S`: the one folds file every later stage uses."""

from __future__ import annotations

from typing import Annotated

import typer

from kit.cli.app import app
from kit.cli.tables import frame_table
from kit.competition import load_competition
from kit.console import console


@app.command()
def folds(
    comp: Annotated[str, typer.Argument(help="Competition name, e.g. facial-keypoints.")],
    k: Annotated[int, typer.Option("--k", min=2, help="Number of folds.")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the group order.")] = 0,
) -> None:
    """Group duplicates and source groups, stratify by complete rows, write folds.csv."""
    from kit.data.folds import write_folds

    result = write_folds(load_competition(comp), k=k, seed=seed)
    state = "wrote" if result.written else "already up to date (same k, seed and data), kept"
    console.print(f"Folds k={result.k}, seed={result.seed}: {state} {result.path}")
    console.print(frame_table(result.table, "Folds", floats="{:.3f}"))
