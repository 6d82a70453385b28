"""`kit report COMP`: one self-contained HTML page about what was trained (kit.report)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kit.cli.app import app
from kit.competition import load_competition
from kit.console import console
from kit.errors import KitError

if TYPE_CHECKING:
    from kit.competition import Competition


@app.command("report")
def report_command(
    competition: Annotated[
        str, typer.Argument(help="Competition name, e.g. facial-keypoints (or demo).")
    ],
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file (default work/COMP/report.html).")
    ] = None,
) -> None:
    """Write one HTML page of the work folder: runs, stack, curves, worst faces, tuning, plan,
    submissions."""
    from kit.report import build_report

    path = build_report(report_competition(competition), out)
    console.print(f"wrote {path}", soft_wrap=True)


def report_competition(name: str) -> Competition:
    """The competition `name`; "demo" is `kit demo`'s, which has no folder of its own."""
    try:
        return load_competition(name)
    except KitError:
        from kit.demo import DEMO_NAME, demo_competition

        if name != DEMO_NAME:
            raise
        return demo_competition()
