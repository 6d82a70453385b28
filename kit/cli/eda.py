"""`kit eda COMP [--top N]`: missing keypoints, duplicates, label outliers, contact sheets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from kit.cli.app import app
from kit.cli.tables import frame_table
from kit.competition import load_competition
from kit.console import console

if TYPE_CHECKING:
    from kit.data.eda import EdaReport


def print_report(report: EdaReport, top: int) -> None:
    missing = report.missing[report.missing["missing"] > 0]
    missing = missing.sort_values("missing", ascending=False)
    if len(missing):
        console.print(frame_table(missing, f"Missing keypoints ({report.train_rows} train rows)"))
    else:
        console.print(f"No missing keypoints in {report.train_rows} train rows.")
    console.print(frame_table(report.patterns, "Rows by present values and pattern"))

    counts = report.counts
    console.print(
        f"Duplicate groups (train+test): {counts['duplicate_groups']} "
        f"({counts['exact_groups']} exact, {counts['near_groups']} near) holding "
        f"{counts['rows_in_duplicate_groups']} rows; {counts['train_test_groups']} of them "
        "span train and test."
    )
    if len(report.duplicate_groups):
        console.print(frame_table(report.duplicate_groups.head(top), "Duplicate groups"))
    ids = report.identity_groups
    console.print(
        f"Identity groups (train, {report.identity_source}): {counts['identity_groups']} groups, "
        f"{counts['identity_singletons']} of one face; the largest holds "
        f"{counts['largest_identity_group']} faces."
    )
    if len(ids):
        console.print(frame_table(ids.head(top), "Largest identity groups (one person each)"))
    caption = "relative: score / median score of rows with the same keypoints"
    title = f"Top {len(report.outliers)} label outliers (Procrustes residual)"
    console.print(frame_table(report.outliers, title, caption=caption))
    for name, path in report.paths.items():
        console.print(f"[dim]{name}:[/] {path}")


@app.command()
def eda(
    comp: Annotated[str, typer.Argument(help="Competition name, e.g. facial-keypoints.")],
    top: Annotated[int, typer.Option("--top", min=1, help="Outliers and groups to show.")] = 24,
) -> None:
    """Missing-keypoint table, duplicate groups, label outliers and contact sheets."""
    from kit.data.eda import run_eda

    report = run_eda(load_competition(comp), top=top)
    print_report(report, top)
