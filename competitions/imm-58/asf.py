"""The IMM Face Database's .asf ("AAM Shape File") format: read and write.

A file is `#` comment lines, then the number of points, then one line per point::

    <path#> <type> <x rel.> <y rel.> <point#> <connects from> <connects to>

with x and y relative to the image's width and height (0..1), and last the host image's file
name. Some files (shots 1 and 5 of some people) add three user fields `<user1> <user2> <user3>`
to each point line (0.00 in the database); they are read and ignored. Fields are separated by
tabs and spaces. The reader checks the count, that point numbers
run 0..N-1 in order and that coordinates are finite numbers in [0, 1]; every problem is a
one-line DataError naming the file and the line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kit.errors import DataError

NUM_POINTS = 58
FIELDS = (7, 10)  # without and with the three user fields
# Coordinates may sit a hair outside [0, 1] through rounding; more is a unit mistake.
RELATIVE_SLACK = 0.01


class Shape(NamedTuple):
    """One .asf file: relative coordinates and the rest of each point line."""

    relative: np.ndarray  # (N, 2) float64, x / width and y / height
    paths: np.ndarray  # (N,) int: the contour each point belongs to (0 jaw ... 6 nose)
    kinds: np.ndarray  # (N,) int: the point type (0 closed / 4 open contour, as IMM writes)
    links: np.ndarray  # (N, 2) int: the points it connects from and to
    host_image: str  # the image file named on the last line


def read_asf(path: Path, shown: str | None = None, num_points: int = NUM_POINTS) -> Shape:
    """Parse and verify one .asf file."""
    shown = shown or str(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", path=shown) from exc
    lines = [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise DataError("has no point count (only comments or nothing)", path=shown)
    count_line, count_text = lines[0]
    if not count_text.isdigit():
        raise DataError(
            f"line {count_line}: expected the point count, got {count_text[:40]!r}", path=shown
        )
    count = int(count_text)
    if count != num_points:
        raise DataError(f"line {count_line}: {count} points, expected {num_points}", path=shown)
    rows = lines[1 : 1 + count]
    if len(rows) < count:
        raise DataError(f"lists {len(rows)} point lines, expected {count}", path=shown)
    parsed = [_point(text, line, index, shown) for index, (line, text) in enumerate(rows)]
    host = lines[1 + count :]
    if len(host) != 1:
        raise DataError(
            f"expected one host image line after the points, found {len(host)}", path=shown
        )
    values = np.array(parsed, dtype=np.float64)
    return Shape(
        relative=values[:, 2:4],
        paths=values[:, 0].astype(int),
        kinds=values[:, 1].astype(int),
        links=values[:, 5:7].astype(int),
        host_image=host[0][1],
    )


def _point(text: str, line: int, index: int, shown: str) -> list[float]:
    fields = text.split()
    if len(fields) not in FIELDS:
        raise DataError(
            f"line {line}: expected 7 fields (path type x y point from to) or 10 (with the "
            f"three user fields), got {len(fields)}",
            path=shown,
        )
    integers = [fields[k] for k in (0, 1, 4, 5, 6)]
    if not all(f.lstrip("-").isdigit() for f in integers):
        raise DataError(f"line {line}: path, type, point and links must be integers", path=shown)
    if int(fields[4]) != index:
        raise DataError(f"line {line}: point number {fields[4]}, expected {index}", path=shown)
    x, y = (_relative(fields[k], axis, line, shown) for k, axis in ((2, "x"), (3, "y")))
    return [float(fields[0]), float(fields[1]), x, y, float(index), *map(float, fields[5:7])]


def _relative(text: str, axis: str, line: int, shown: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(f"line {line}: {axis} {text!r} is not a finite number", path=shown)
    if not -RELATIVE_SLACK <= value <= 1 + RELATIVE_SLACK:
        raise DataError(
            f"line {line}: {axis} {value:g} is not relative to the image (0..1)",
            path=shown,
            hint="an .asf file holds x / width and y / height, not pixels",
        )
    return value


def format_asf(shape: Shape) -> str:
    """An .asf text in IMM's own layout (header comments, tab-separated fields, host image)."""
    rows = [
        f"{p} \t{k} \t{x:.8f} \t{y:.8f} \t{i} \t{a} \t{b}"
        for i, (p, k, (x, y), (a, b)) in enumerate(
            zip(shape.paths, shape.kinds, shape.relative, shape.links, strict=True)
        )
    ]
    return "\n".join(
        [
            "#" * 70,
            "#",
            "#    AAM Shape File  -  written by kit's example generator",
            "#",
            "#" * 70,
            "",
            "#",
            "# number of model points",
            "#",
            str(len(rows)),
            "",
            "#",
            "# model points",
            "#",
            "# format: <path#> <type> <x rel.> <y rel.> <point#> <connects from> <connects to>",
            "#",
            *rows,
            "",
            "#",
            "# host image",
            "#",
            shape.host_image,
            "",
        ]
    )
