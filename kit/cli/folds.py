"""`kit folds COMP [--k 5] [--seed S] [--group-by identity|duplicates] [--force]`: the one folds
file every later stage uses (kit.data.folds)."""

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
    k: Annotated[
        int | None, typer.Option("--k", min=2, help="Number of folds (default: the file's, or 5).")
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option("--seed", help="Seed of the group order (default: the file's, or 0)."),
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option(
            "--group-by",
            help="identity (default: one person's faces share a fold) or duplicates (only "
            "near-duplicate images and source groups).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even when the existing file is kept.")
    ] = False,
) -> None:
    """Group duplicates, source groups and identities, stratify by complete rows, write folds.csv.

    An existing folds file is kept (runs made on it stay comparable) unless the data changed,
    another --k, --seed or --group-by is asked for, or --force.
    """
    from kit.data.folds import runs_on_other_folds, write_folds

    competition = load_competition(comp)
    result = write_folds(competition, k=k, seed=seed, group_by=group_by, force=force)
    state = "wrote" if result.written else "already up to date (same data; --force rebuilds), kept"
    groups = int(result.table["groups"].sum())
    console.print(
        f"Folds k={result.k}, seed={result.seed}, grouped by {result.group_by} "
        f"({groups} groups): {state} {result.path}"
    )
    if result.embedder == "face-net":
        console.print("People told apart by the face net (kit[faces]).")
    elif result.embedder:
        console.print(
            "People told apart by hand-made descriptors, mostly one video each; "
            "`pip install 'kit[faces]'` adds a face net that joins a person's videos."
        )
    console.print(frame_table(result.table, "Folds", floats="{:.3f}"))
    if result.outdated:
        console.print(f"[yellow]note:[/] these folds were {result.outdated}")
    stale = runs_on_other_folds(competition) if result.written else []
    if stale:
        console.print(
            f"[yellow]note:[/] {len(stale)} finished run(s) were trained on other folds; "
            "`kit stack` leaves them out until they are retrained (kit train / kit tune)"
        )
