"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

import re
from pathlib import Path

# numpy 2's scalar reprs (`np.int64(0)`, `np.str_('a')`, `np.True_`): code, not the value a
# message means; a repr of a tuple or list of numpy values prints them so too.
_NUMPY_SCALAR = re.compile(r"\bnp\.(?:u?int|float|complex|longdouble|str_|bytes_)\w*\(([^()]*)\)")
_NUMPY_BOOL = re.compile(r"\bnp\.(True|False)_")


def plain_values(text: str) -> str:
    """`row np.int64(0)` -> `row 0`: the values of numpy scalars formatted into a message."""
    return _NUMPY_BOOL.sub(r"\1", _NUMPY_SCALAR.sub(r"\1", text))


class KitError(Exception):
    """A user-facing error: one line naming the file or field, what is wrong and what to do."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        text = f"{path}: {message}" if path is not None else message
        if hint:
            text = f"{text} ({hint})"
        super().__init__(plain_values(" ".join(text.split())))  # one line, always


class DataError(KitError):
    """Malformed or missing input data."""

    exit_code = 2


class KaggleError(KitError):
    """A Kaggle API failure (credentials, rules, missing competition, rate limit, server error)."""

    exit_code = 3
