"""`kit pseudo COMP`: a teacher's predictions as labels where the data has none (kit.pseudo)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from kit.cli.app import app
from kit.competition import load_competition
from kit.console import console, err_console

if TYPE_CHECKING:
    from kit.progress import Event
    from kit.pseudo import PseudoResult


def pseudo_table(result: PseudoResult) -> Table:
    """How many keypoints are true and pseudo labels."""
    counts = result.manifest.counts
    table = Table()
    table.add_column("labels")
    table.add_column("keypoints", justify="right")
    table.add_row("training rows: true", str(counts["train_true"]))
    table.add_row("training rows: pseudo", str(counts["train_pseudo"]))
    table.add_row("training rows: neither", str(counts["train_none"]))
    table.add_row("test rows: pseudo", str(counts["test_pseudo"]))
    return table


@app.command("pseudo")
def pseudo_command(
    competition: Annotated[str, typer.Argument(help="Competition name, e.g. facial-keypoints.")],
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="Run or stack id (or a unique prefix, or its folder) whose predictions fill the "
            "missing labels; default: the best CV stack, else the best CV run, predicting "
            "every keypoint.",
        ),
    ] = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Per-fold labels from the teacher's fold models only: student fold k learns "
            "nothing that came from fold k's labels (no leak into its CV).",
        ),
    ] = False,
    device: Annotated[
        str | None,
        typer.Option("--device", help="For --strict: auto (default), cpu, cuda, cuda:N or mps."),
    ] = None,
) -> None:
    """Write a pseudo-label set; train a student with `kit train COMP MODEL --set pseudo=ID`."""
    from kit.pseudo import make_pseudo_labels

    comp = load_competition(competition)

    def show(event: Event) -> None:
        if event.what == "fold":
            err_console.print(str(event))

    with err_console.status(f"pseudo-labelling {comp.name}"):
        result = make_pseudo_labels(comp, teacher, strict=strict, device=device, on_event=show)
    if result.reused:
        console.print(f"[green]reusing pseudo-label set {result.pseudo_id}[/] (nothing to do)")
    manifest = result.manifest
    teacher = manifest.teacher
    kind = "strict" if result.strict else "normal"
    console.print(
        f"{kind} pseudo-label set [bold]{result.pseudo_id}[/] from {teacher['kind']} "
        f"{teacher['id']} (CV {manifest.metric} {manifest.teacher_cv:.4f})"
    )
    console.print(pseudo_table(result))
    console.print(f"pseudo labels: {manifest.method}", soft_wrap=True)
    console.print(f"folder: {result.path}", soft_wrap=True)
    console.print(
        f"train a student: kit train {comp.name} MODEL --set pseudo={result.pseudo_id} "
        "--set pseudo_weight=0.5",
        soft_wrap=True,
    )
