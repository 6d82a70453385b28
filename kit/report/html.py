"""The report's HTML parts: its CSS (kit track report's, plus a few rules), escaping,
number cells, tables of already-escaped cells, embedded PNGs, and one-line "nothing here"s."""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence

from kit.track.report import CSS as TRACK_CSS

CSS = (
    TRACK_CSS
    + """
body { max-width: 1200px; padding: 0 1em; }
img { box-sizing: border-box; } code { white-space: nowrap; }
nav { margin: 0.8em 0; } nav a { margin-right: 1em; }
.scroll { overflow-x: auto; }
table.keys { font-size: 0.8em; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; color: #17702a; } td.when { white-space: nowrap; }
tr.partial td { color: #777; }
p.none { color: #777; font-style: italic; }
details { margin: 0.3em 0 0.8em; } summary { cursor: pointer; font-weight: 600; }
.bar { display: inline-block; height: 0.8em; background: #3b6fd6; vertical-align: middle; }
"""
)


def esc(value: object) -> str:
    return html.escape(str(value))


def num(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def when(created: str) -> str:
    """A manifest's ISO time as a 'YYYY-MM-DD HH:MM' cell that does not wrap."""
    return f'<td class="when">{esc(created[:16].replace("T", " "))}</td>'


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def none(text: str) -> str:
    return f'<p class="none">{esc(text)}</p>'


def image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    css: str = "",
    row_classes: Sequence[str] | None = None,
) -> str:
    """A table of already-escaped cells (a cell may bring its own <td ...>); the header is
    escaped here. A "keys" table (many columns) scrolls sideways rather than squeeze."""
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = []
    for i, row in enumerate(rows):
        css_row = row_classes[i] if row_classes else ""
        attr = f' class="{css_row}"' if css_row else ""
        body.append(f"<tr{attr}>{''.join(_cell(c) for c in row)}</tr>")
    opening = '<div class="scroll">' if "keys" in css else "<div>"
    return (
        f'{opening}<table class="{css}"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _cell(cell: str) -> str:
    return cell if cell.startswith("<td") else f"<td>{cell}</td>"


def number_cell(value: float | None, best: bool = False, digits: int = 4) -> str:
    css = "num best" if best else "num"
    return f'<td class="{css}">{num(value, digits)}</td>'


def details(summary: str, body: str, opened: bool) -> str:
    return f"<details{' open' if opened else ''}><summary>{esc(summary)}</summary>{body}</details>"
