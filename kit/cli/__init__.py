"""Command line: one thin module per command, each calling library code.

`main` turns KitError into a one-line message and a non-zero exit code, with no traceback.
"""

from __future__ import annotations

from rich.markup import escape

from kit.cli import (  # noqa: F401  (each module registers its command)
    demo,
    eda,
    fetch,
    folds,
    predict,
    pseudo,
    report,
    run,
    stack,
    submit,
    track,
    train,
    tune,
)
from kit.cli.app import app
from kit.console import err_console
from kit.errors import KitError


def main(argv: list[str] | None = None) -> int:
    """Run kit; returns the exit code (the console script passes it to sys.exit)."""
    try:
        app(args=argv, prog_name="kit")  # standalone: usage errors and --help exit via SystemExit
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except KitError as exc:
        # escaped: a message may quote a TOML table ("[sources]"), which rich would swallow
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    return 0
