"""How a command prints its tables: fitted to the terminal (the default), whole however wide
(`--wide`), or as data (`--format csv|json`: every column, full names) for scripts.

Data goes to stdout alone, so `kit stack COMP --format csv > table.csv` is a clean file.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from kit.console import console
from kit.errors import KitError

if TYPE_CHECKING:
    import pandas as pd

UNLIMITED = 100_000  # a width no table reaches: measures a table's natural width
FREE_TEXT_FLOOR = 12  # a note or file name cut shorter than this says little


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


FormatOption = Annotated[
    Format,
    typer.Option(
        "--format",
        help="table: fitted to the terminal; csv or json: every column, full names, on stdout.",
    ),
]
WideOption = Annotated[
    bool,
    typer.Option(
        "--wide", help="Print tables whole, however wide the terminal: every column, no clipping."
    ),
]


def check_format(fmt: Format, wide: bool) -> None:
    """--wide shapes a table; csv and json carry every column already."""
    if wide and fmt is not Format.table:
        raise KitError(f"--wide applies to tables, not --format {fmt.value}")


def fit_width(wide: bool) -> int | None:
    """The width a table must fit: the terminal's, or none with --wide."""
    return None if wide else console.width


def natural_width(renderable: RenderableType) -> int:
    """Columns `renderable` takes when nothing is clipped or wrapped."""
    return console.measure(renderable, options=console.options.update_width(UNLIMITED)).maximum


def print_tables(*renderables: RenderableType, wide: bool = False) -> None:
    """Print on stdout; with `wide`, on a console as wide as the widest of them (rich would
    clip or wrap to the terminal's width)."""
    target = console
    if wide:
        width = max([console.width, *(natural_width(r) for r in renderables)])
        target = Console(
            file=console.file,
            width=width,
            highlight=False,
            color_system=console.color_system,  # type: ignore[arg-type]
            force_terminal=console.is_terminal,
        )
    for renderable in renderables:
        target.print(renderable)


COMPACT: dict[str, Any] = {
    "box": box.SIMPLE_HEAD,
    "show_edge": False,
    "pad_edge": False,
    "collapse_padding": True,
    "title_justify": "left",
    "caption_justify": "left",
}  # no vertical rules: two spaces between columns, so more of them fit 80 columns


def compact(table: Table) -> Table:
    """`table` in the COMPACT style."""
    for name, value in COMPACT.items():
        setattr(table, name, value)
    return table


def fit_free_text(
    table: Table, width: int | None, order: Sequence[str], floor: int = FREE_TEXT_FLOOR
) -> Table:
    """Narrow the free-text columns named in `order` (headers; the first gives way first, each
    down to `floor`) until `table` fits `width`, so that rich need not cut the others. Their
    cells must be `clipped`."""
    if width is None:
        return table
    for column in (c for name in order for c in table.columns if c.header == name):
        excess = natural_width(table) - width
        if excess <= 0:
            break
        widest = max(natural_width(cell) for cell in [column.header, *column.cells])
        column.max_width = max(floor, widest - excess)
    return table


def clipped(text: str, style: str = "") -> Text:
    """A free-text cell: one line, cut with '…' where its column is narrowed to fit (its column
    must wrap, so that rich narrows it before the others)."""
    return Text(text, style=style, no_wrap=True, overflow="ellipsis")


def plain(value: Any) -> Any:
    """A JSON-ready value: numpy scalars as Python ones, NaN and None as null."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of `frame` as JSON-ready dicts."""
    return [{str(k): plain(v) for k, v in row.items()} for row in frame.to_dict("records")]


def write_csv(frame: pd.DataFrame) -> None:
    sys.stdout.write(frame.to_csv(index=False))


def write_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=plain, allow_nan=False) + "\n")
