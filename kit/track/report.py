"""`kit track report COMP`: one self-contained HTML page (charts inlined as base64 PNG, tables,
inline CSS, no scripts and no external requests), written atomically next to the database."""

from __future__ import annotations

import base64
import html
import re
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from kit.track.plots import Chart
from kit.track.views import Overview, fmt_score, summary_lines
from kit.workspace import write_text

ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?Z?")
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { margin-bottom: 0.2em; } .muted { color: #666; }
.summary { background: #f4f6fa; border-left: 4px solid #3b6fd6; padding: 0.6em 1em; }
table { border-collapse: collapse; margin: 0.5em 0 2em; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.7em; text-align: left; }
th { background: #eef1f6; } tr.you td { font-weight: bold; background: #e7f6e7; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0 1.5em; }
"""


def _table(frame: pd.DataFrame, columns: dict[str, str], highlight: pd.Series | None = None) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for title in columns.values())
    body = []
    for i, (_, row) in enumerate(frame.iterrows()):
        css = ' class="you"' if highlight is not None and bool(highlight.iloc[i]) else ""
        cells = "".join(f"<td>{html.escape(_cell(row[c]))}</td>" for c in columns)
        body.append(f"<tr{css}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return fmt_score(value)
    text = str(value)
    if ISO_TIME.fullmatch(text):  # Kaggle's "2024-01-01T10:00:00.123Z" -> "2024-01-01 10:00"
        return text[:16].replace("T", " ")
    return text


def _image(chart: Chart) -> str:
    data = base64.b64encode(chart.path.read_bytes()).decode("ascii")
    alt = html.escape(chart.title)
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def render_html(ov: Overview, charts: list[Chart], generated: datetime | None = None) -> str:
    when = (generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    summary = "<br>".join(html.escape(line) for line in summary_lines(ov))
    top = _table(
        ov.top,
        {
            "rank": "rank",
            "team_name": "team",
            "score": "score",
            "submission_count": "entries",
            "submission_date": "last submission",
        },
        highlight=ov.top["team_id"] == ov.now.team_id,
    )
    subs = ov.submissions.assign(
        status=ov.submissions["status"].where(
            ov.submissions["status"] != "ERROR",
            "ERROR " + ov.submissions["error_description"],
        )
    )
    mine = _table(
        subs,
        {
            "date": "date",
            "ref": "ref",
            "file_name": "file",
            "status": "status",
            "cv_score": "local CV",
            "public_score": "public",
            "private_score": "private",
            "description": "description",
            "manifest": "manifest",
        },
    )
    warnings = "".join(f"<p class='muted'>{html.escape(w)}</p>" for w in ov.warnings)
    title = html.escape(f"{ov.competition}: leaderboard tracking")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{CSS}</style></head>
<body>
<h1>{title}</h1>
<p class="muted">generated {when} by kit track</p>
<div class="summary">{summary}</div>
<h2>Charts</h2>
{"".join(_image(c) for c in charts)}
<h2>Top {len(ov.top)}</h2>
{top}
<h2>Your submissions ({len(ov.submissions)})</h2>
{mine}
{warnings}
</body></html>
"""


def write_report(ov: Overview, charts: list[Chart], path: Path) -> Path:
    write_text(path, render_html(ov, charts))
    return path
