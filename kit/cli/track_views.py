"""Rich renderings of `kit track`: the overview of `kit track show` and the tracker's events.

The data (Overview, summary lines) come from kit.track.views; only the terminal form lives here.
"""

from __future__ import annotations

import pandas as pd
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kit.console import console, err_console
from kit.progress import Event
from kit.track.views import Overview, fmt_score, summary_lines

STATUS_STYLE = {
    "COMPLETE": "[green]scored[/]",
    "PENDING": "[yellow]pending[/]",
    "ERROR": "[red]error[/]",
}


def render(ov: Overview) -> RenderableType:
    """The rich view of `kit track show`."""
    head = Text("\n".join(summary_lines(ov)))
    return Group(head, top_table(ov), submissions_table(ov))


def top_table(ov: Overview) -> Table:
    table = Table(title=f"Top {len(ov.top)}", title_justify="left")
    table.add_column("rank", justify="right")
    table.add_column("team")
    table.add_column("score", justify="right")
    table.add_column("entries", justify="right")
    table.add_column("last submission")
    for row in ov.top.itertuples():
        style = "bold green" if row.team_id == ov.now.team_id else None
        entries = "" if pd.isna(row.submission_count) else str(int(row.submission_count))
        table.add_row(
            str(row.rank),
            Text(row.team_name),  # Text: a team called "[red]x" is not markup
            row.score,
            entries,
            row.submission_date[:16].replace("T", " "),
            style=style,
        )
    return table


def submissions_table(ov: Overview) -> Table:
    table = Table(title=f"Your submissions ({len(ov.submissions)})", title_justify="left")
    table.add_column("date (UTC)", no_wrap=True)
    table.add_column("ref", justify="right", no_wrap=True)
    table.add_column("file", overflow="fold")
    table.add_column("status", no_wrap=True)
    for name in ("local CV", "public", "private"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("note", overflow="fold")
    for row in ov.submissions.itertuples():
        status = STATUS_STYLE.get(row.status, row.status.lower())
        table.add_row(
            row.date[5:16].replace("T", " "),
            str(row.ref),
            Text(row.file_name),
            status,
            fmt_score(row.cv_score),
            row.public_score or "-",
            row.private_score or "-",
            Text(row.error_description if row.status == "ERROR" else row.description),
        )
    return table


def print_track_event(event: Event) -> None:
    """How the tracker's progress looks: changes stand out, failures are yellow."""
    text = escape(event.text)
    if event.what == "change":
        competition, _, message = text.partition(": ")
        console.print(f"[bold magenta]{competition}[/]: {message}")
    elif event.what in ("poll_failed", "warning"):
        prefix = "warning: " if event.what == "warning" else ""
        err_console.print(f"[yellow]{prefix}{text}[/]")
    elif event.what == "snapshot":
        console.print(text, soft_wrap=True)
    else:
        err_console.print(text)
