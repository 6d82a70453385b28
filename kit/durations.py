"""Durations on the command line: "90s", "30m", "1h30m", "2d" (and bare seconds where allowed).

One parser for `kit tune --timeout`, `kit run --budget` and `kit track --every`; each names its
option in the one-line error.
"""

from __future__ import annotations

import re

from kit.errors import KitError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = r"(\d+(?:\.\d+)?)([smhd])"


def parse_duration(
    text: str,
    option: str = "--timeout",
    *,
    bare_seconds: bool = True,
    minimum: float = 0.0,
    hint: str = "e.g. 90s, 30m, 2h",
) -> float:
    """`text` in seconds; a number without a unit is seconds when `bare_seconds`."""
    cleaned = text.strip().lower().replace(" ", "")
    if bare_seconds and re.fullmatch(r"\d+(\.\d+)?", cleaned):
        seconds = float(cleaned)
    else:
        parts = re.findall(_PART, cleaned)
        if not parts or "".join(n + u for n, u in parts) != cleaned:
            raise KitError(f"{option} {text!r} is not a duration", hint=hint)
        seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise KitError(f"{option} {text!r} must be positive")
    if seconds < minimum:
        raise KitError(f"{option} {text!r} is too short", hint=f"at least {minimum:.0f} s")
    return seconds


def format_duration(seconds: float) -> str:
    """The inverse of `parse_duration`: 5400 -> "1h30m"."""
    parts, left = [], round(seconds)
    for unit in ("d", "h", "m", "s"):
        count, left = divmod(left, UNITS[unit])
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"
