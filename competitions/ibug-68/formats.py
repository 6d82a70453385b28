"""iBUG 300-W file formats: dlib's XML (train labels, test boxes) and the .pts landmark files.

Readers return plain records in ORIGINAL image pixels, 0-based (pixel centres at integers);
they parse and verify text only. Opening images and cropping faces is plugin.py's job.
Every problem is a one-line DataError naming the file (relative to the competition folder).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import NamedTuple
from xml.sax.saxutils import escape

import numpy as np

from kit.errors import DataError

NUM_POINTS = 68
PTS_HEADER = re.compile(r"^\s*version\s*:", re.IGNORECASE)


class Box(NamedTuple):
    """A dlib face box: the pixels left..left+width-1, top..top+height-1 (0-based)."""

    left: float
    top: float
    width: float
    height: float


class Face(NamedTuple):
    """One labelled or unlabelled face of an XML (or of a .pts file)."""

    file: str  # image path as written in the XML, relative to the XML's folder
    box: Box
    points: np.ndarray | None  # (68, 2) float64, 0-based original pixels; None = test face
    size: tuple[int, int] | None  # (width, height) where the XML states it
    source: str  # the file the face was read from, for error messages
    index: int  # 0-based position of this box within its image
    count: int  # number of boxes of that image


def _number(text: str | None, what: str, where: str, source: str) -> float:
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        shown = "missing" if text is None else f"{text!r} is not a finite number"
        raise DataError(f"{where}: {what} {shown}", path=source)
    return value


# --- dlib XML -------------------------------------------------------------------------------


def read_dlib_xml(path: Path, shown: str, *, with_parts: bool) -> list[Face]:
    """Faces of a dlib image-dataset XML, in file order; `shown` names it in errors.

    with_parts=True (training labels) requires exactly 68 parts named 00..67 in every box;
    False (test boxes) ignores parts. Attributes are read by name, so their order and
    quoting do not matter; `ignore='1'` boxes (dlib's "not a face to learn") are skipped.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DataError(f"XML does not parse: {exc}", path=shown) from exc
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", path=shown) from exc
    images = root.find("images")
    if images is None:
        raise DataError("no <images> element under <dataset>", path=shown)
    faces: list[Face] = []
    for number, element in enumerate(images.iter("image"), start=1):
        faces.extend(_image_faces(element, number, shown, with_parts))
    if not faces:
        raise DataError("lists no face boxes", path=shown)
    return faces


def _image_faces(element: ET.Element, number: int, shown: str, with_parts: bool) -> list[Face]:
    file = element.get("file")
    if not file:
        raise DataError(f"<image> number {number} has no file attribute", path=shown)
    where = f"image {file!r}"
    size = None
    if element.get("width") is not None or element.get("height") is not None:
        w = _number(element.get("width"), "width", where, shown)
        h = _number(element.get("height"), "height", where, shown)
        size = (int(w), int(h))
    boxes = [b for b in element.iter("box") if b.get("ignore", "0") not in ("1", "true")]
    if not boxes:
        raise DataError(f"{where} has no <box>", path=shown)
    faces = []
    for index, box_el in enumerate(boxes):
        box_where = f"{where} box {index + 1}" if len(boxes) > 1 else where
        box = Box(*(_number(box_el.get(k), k, box_where, shown) for k in Box._fields))
        if box.width <= 0 or box.height <= 0:
            raise DataError(
                f"{box_where}: box has non-positive size {box.width:g}x{box.height:g}", path=shown
            )
        points = _parts(box_el, box_where, shown) if with_parts else None
        faces.append(Face(file, box, points, size, shown, index, len(boxes)))
    return faces


def _parts(box_el: ET.Element, where: str, shown: str) -> np.ndarray:
    parts = box_el.findall("part")
    if len(parts) != NUM_POINTS:
        raise DataError(f"{where} has {len(parts)} parts, expected {NUM_POINTS}", path=shown)
    names = [part.get("name", "") for part in parts]
    order = [int(n) if n.isdigit() else -1 for n in names]
    if sorted(order) != list(range(NUM_POINTS)):
        bad = next(
            n
            for n, k in zip(names, order, strict=True)
            if order.count(k) > 1 or k < 0 or k >= NUM_POINTS
        )
        raise DataError(f"{where}: part name {bad!r} is not a distinct 00..67", path=shown)
    try:  # the fast path; the slow one below names the bad value
        coords = np.array([[p.get("x"), p.get("y")] for p in parts], dtype=np.float64)
    except (TypeError, ValueError):
        coords = np.full((NUM_POINTS, 2), np.nan)
    if not np.isfinite(coords).all():
        for name, part in zip(names, parts, strict=True):
            for axis in ("x", "y"):
                _number(part.get(axis), axis, f"{where} part {name}", shown)
    points = np.empty((NUM_POINTS, 2))
    points[order] = coords
    return points


def _attr(value: str) -> str:
    return escape(value, {"'": "&apos;", '"': "&quot;"})


def format_train_xml(faces: list[Face], name: str = "training images") -> str:
    """dlib's own layout: declaration, single quotes, width/height, parts with 2 decimals."""
    lines = [
        "<?xml version='1.0' encoding='ISO-8859-1'?>",
        "<?xml-stylesheet type='text/xsl' href='image_metadata_stylesheet.xsl'?>",
        "<dataset>",
        f"<name>{escape(name)}</name>",
        "<images>",
    ]
    for file, group in _by_image(faces):
        size = group[0].size
        dims = f" width='{size[0]}' height='{size[1]}'" if size else ""
        lines.append(f"  <image file='{_attr(file)}'{dims}>")
        for face in group:
            b = face.box
            lines.append(
                f"    <box top='{b.top:g}' left='{b.left:g}' "
                f"width='{b.width:g}' height='{b.height:g}'>"
            )
            for k, (x, y) in enumerate(face.points if face.points is not None else []):
                lines.append(f"      <part name='{k:02d}' x='{x:.2f}' y='{y:.2f}'/>")
            lines.append("    </box>")
        lines.append("  </image>")
    lines += ["</images>", "</dataset>", ""]
    return "\n".join(lines)


def format_test_xml(faces: list[Face], name: str = "testing images") -> str:
    """The CS194-26 test layout: no declaration, double quotes, box attrs height left top width."""
    lines = ["<dataset>", f"<name>{escape(name)}</name>", "<images>"]
    for file, group in _by_image(faces):
        lines.append(f'  <image file="{_attr(file)}">')
        for face in group:
            b = face.box
            lines.append(
                f'    <box height="{b.height:g}" left="{b.left:g}" top="{b.top:g}" '
                f'width="{b.width:g}">'
            )
            lines.append("      </box>")
        lines.append("  </image>")
    lines += ["</images>", "</dataset>", ""]
    return "\n".join(lines)


def _by_image(faces: list[Face]) -> list[tuple[str, list[Face]]]:
    groups: dict[str, list[Face]] = {}
    for face in faces:
        groups.setdefault(face.file, []).append(face)
    return list(groups.items())


# --- .pts -----------------------------------------------------------------------------------


def read_pts(path: Path, shown: str | None = None, num_points: int = NUM_POINTS) -> np.ndarray:
    """(num_points, 2) float64 landmarks of a .pts file, converted from 1-based to 0-based.

    Accepts both 300-W variants: bare `x y` lines, and the `version: 1` / `n_points: N` /
    `{ ... }` header form (with or without a final newline).
    """
    shown = shown or str(path)
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="latin-1").splitlines()]
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror or exc}", path=shown) from exc
    numbered = [(k, ln) for k, ln in enumerate(lines, start=1) if ln]
    declared = None
    if numbered and PTS_HEADER.match(numbered[0][1]):
        numbered, declared = _strip_pts_header(numbered, shown)
    points = np.array([_pts_row(text, line, shown) for line, text in numbered]).reshape(-1, 2)
    if declared is not None and declared != len(points):
        raise DataError(f"header says n_points {declared} but lists {len(points)}", path=shown)
    if len(points) != num_points:
        raise DataError(f"has {len(points)} points, expected {num_points}", path=shown)
    return points - 1.0


def _strip_pts_header(
    numbered: list[tuple[int, str]], shown: str
) -> tuple[list[tuple[int, str]], int | None]:
    texts = [t for _, t in numbered]
    if "{" not in texts or "}" not in texts:
        raise DataError("header variant without '{' ... '}' around the points", path=shown)
    opening, closing = texts.index("{"), len(texts) - 1 - texts[::-1].index("}")
    declared = None
    for line, text in numbered[:opening]:
        key, _, value = text.partition(":")
        if key.strip().lower() == "n_points":
            if not value.strip().isdigit():
                raise DataError(
                    f"line {line}: n_points {value.strip()!r} is not a count", path=shown
                )
            declared = int(value)
    return numbered[opening + 1 : closing], declared


def _pts_row(text: str, line: int, shown: str) -> tuple[float, float]:
    fields = text.split()
    if len(fields) != 2:
        raise DataError(f"line {line}: expected 'x y', got {text[:40]!r}", path=shown)
    x, y = (_number(v, "coordinate", f"line {line}", shown) for v in fields)
    return x, y


def format_pts(points: np.ndarray, *, header: bool) -> str:
    """A .pts text for 0-based (K, 2) points (written 1-based). The header variant, like
    300-W's own files, has no final newline."""
    rows = [f"{x + 1:.6f} {y + 1:.6f}" for x, y in points]
    if not header:
        return "\n".join(rows) + "\n"
    return "\n".join(["version: 1", f"n_points:  {len(points)}", "{", *rows, "}"])
