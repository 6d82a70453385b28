"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

from pathlib import Path


class KitError(Exception):
    """A user-facing error: one line naming the file or field, what is wrong and what to do."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None):
        text = f"{path}: {message}" if path is not None else message
        if hint:
            text = f"{text} ({hint})"
        super().__init__(" ".join(text.split()))  # one line, always


class DataError(KitError):
    """Malformed or missing input data."""

    exit_code = 2


class KaggleError(KitError):
    """A Kaggle API failure (credentials, rules, missing competition, rate limit, server error)."""

    exit_code = 3
