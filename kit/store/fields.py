"""What a manifest's fields hold, checked as it is read: each field against its annotation
(str, int, float, bool, dict, list of ..., or None where allowed; numbers finite), and the
scores (`cv`) every reader sorts and prints. A field of the wrong kind is a DataError naming
the manifest and the field, not a KeyError or TypeError in whichever command read it.
"""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Any, Union

from kit.errors import DataError


def check_types(data: dict[str, Any], hints: dict[str, Any], path: Path, redo: str) -> None:
    """Every field of `data` that `hints` (name -> annotation) types holds that type."""
    for name, hint in hints.items():
        if name in data and not fits(data[name], hint):
            raise DataError(
                f"manifest field {name} is {_shown(data[name])}, not {_named(hint)}",
                path=path,
                hint=redo,
            )


def fits(value: Any, hint: Any) -> bool:
    """Whether the JSON `value` holds the annotation `hint` (Any: anything)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(fits(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is list:
        return isinstance(value, list) and all(fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(fits(v, args[1]) for v in value.values())
    return _scalar(value, hint)


def _scalar(value: Any, hint: Any) -> bool:
    if hint is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):  # JSON true is no number
        return False
    if hint is int:
        return isinstance(value, int)
    if hint is float:
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, hint)


def check_scores(cv: dict[str, Any], path: Path, redo: str, field: str = "cv") -> None:
    """A scores object as kit.metrics.Scores writes it: `overall` a finite number (what runs
    are sorted by), `per_keypoint` and `per_group` numbers by name (NaN: not scored)."""
    if not _number(cv.get("overall")) or not math.isfinite(cv["overall"]):
        shown = "missing" if "overall" not in cv else _shown(cv["overall"])
        raise DataError(
            f"manifest field {field}.overall is {shown}, not a finite number", path=path, hint=redo
        )
    for part in ("per_keypoint", "per_group"):
        scores = cv.get(part, {})
        if not isinstance(scores, dict) or not all(_number(v) for v in scores.values()):
            raise DataError(
                f"manifest field {field}.{part} is not numbers by name", path=path, hint=redo
            )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"a {type(value).__name__}"


def _named(hint: Any) -> str:
    """`hint` in words: "a string", "a list of whole numbers", "a finite number or null"."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return " or ".join(_named(arg) for arg in args)
    if origin is list:
        return f"a list of {_named(args[0]).split(' ', 1)[1]}s"
    if origin is dict or hint is dict:
        return "an object"
    names = {str: "a string", int: "a whole number", float: "a finite number", bool: "true/false"}
    return "null" if hint is type(None) else names.get(hint, "a value")
