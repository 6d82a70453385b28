"""Rich renderings of `kit track`: the overview of `kit track show` and the tracker's events.

The data (Overview, summary lines) come from kit.track.views; only the terminal form lives here.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kit.cli.output import clipped, compact, fit_free_text, records
from kit.console import console, err_console
from kit.progress import Event
from kit.track.views import Overview, fmt_score, summary_lines

STATUS_STYLE = {
    "COMPLETE": "[green]scored[/]",
    "PENDING": "[yellow]pending[/]",
    "ERROR": "[red]error[/]",
}


def render(ov: Overview, width: int | None = None) -> RenderableType:
    """The rich view of `kit track show`: tables that fit `width` (None: whole), their free
    text (team names, file names, notes) last and cut to one line."""
    head = Text("\n".join(summary_lines(ov)))
    return Group(head, top_table(ov), submissions_table(ov, width))


def top_table(ov: Overview) -> Table:
    table = compact(Table(title=f"Top {len(ov.top)}"))
    table.add_column("rank", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("entries", justify="right", no_wrap=True)
    table.add_column("last submission", no_wrap=True)
    table.add_column("team")
    for row in top_frame(ov).itertuples(index=False):
        table.add_row(
            str(row.rank),
            row.score,
            "" if row.entries is None else str(row.entries),
            row.last_submission,
            clipped(row.team),  # Text: a team called "[red]x" is not markup
            style="bold green" if row.you else None,
        )
    return table


def submissions_table(ov: Overview, width: int | None = None) -> Table:
    """One line per submission: the note gives way first, then the file name."""
    table = compact(Table(title=f"Your submissions ({len(ov.submissions)})"))
    table.add_column("date (UTC)", no_wrap=True)
    table.add_column("ref", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for name in ("local CV", "public", "private"):
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("file")
    table.add_column("note")
    for row in submissions_frame(ov).itertuples(index=False):
        table.add_row(
            row.date[5:16].replace("T", " "),
            str(row.ref),
            STATUS_STYLE.get(row.status, row.status.lower()),
            fmt_score(row.local_cv),
            row.public or "-",
            row.private or "-",
            clipped(row.file),
            clipped(row.note),
        )
    return fit_free_text(table, width, ("note", "file"))


def top_frame(ov: Overview) -> pd.DataFrame:
    """The top of the board as `--format csv|json` gives it (and the table shows it)."""
    rows = [
        {
            "rank": int(row.rank),
            "team": str(row.team_name),
            "score": row.score,
            "entries": None if pd.isna(row.submission_count) else int(row.submission_count),
            "last_submission": row.submission_date[:16].replace("T", " "),
            "you": row.team_id == ov.now.team_id,
        }
        for row in ov.top.itertuples()
    ]
    columns = ["rank", "team", "score", "entries", "last_submission", "you"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["entries"] = pd.Series([r["entries"] for r in rows], index=frame.index, dtype=object)
    return frame


def submissions_frame(ov: Overview) -> pd.DataFrame:
    """Your submissions, whole (the note is Kaggle's description, or the error of a failed
    one), as `--format csv|json` gives them."""
    rows = [
        {
            "date": row.date,
            "ref": row.ref,
            "status": row.status,
            "local_cv": row.cv_score,
            "public": row.public_score or "",
            "private": row.private_score or "",
            "file": row.file_name,
            "note": row.error_description if row.status == "ERROR" else row.description,
        }
        for row in ov.submissions.itertuples()
    ]
    columns = ["date", "ref", "status", "local_cv", "public", "private", "file", "note"]
    return pd.DataFrame(rows, columns=columns)


def overview_data(ov: Overview) -> dict[str, Any]:
    """`kit track show --format json`: the summary lines, the top of the board, your
    submissions."""
    return {
        "competition": ov.competition,
        "summary": summary_lines(ov),
        "top": records(top_frame(ov)),
        "submissions": records(submissions_frame(ov)),
    }


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
