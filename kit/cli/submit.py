"""`kit submit COMP`: write, validate and (unless --dry-run) upload a submission (kit.submit)."""

from __future__ import annotations

from typing import Annotated

import typer

from kit.cli.app import app
from kit.cli.tables import submission_summary
from kit.competition import load_competition
from kit.console import console, err_console


@app.command("submit")
def submit_command(
    competition: Annotated[str, typer.Argument(help="Competition name, e.g. facial-keypoints.")],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Run or stack id (or a unique prefix, or its folder); default: the best CV "
            "run or stack that predicts every keypoint.",
        ),
    ] = None,
    subset_source: Annotated[
        str | None,
        typer.Option(
            "--subset-from",
            help="Run or stack for the images that ask only for the keypoints of the "
            "competition's [submit_split] subset (facial-keypoints' 8 + 30 split); 'none' "
            "turns it off; default: the best CV on those keypoints.",
        ),
    ] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Submission description.")] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write and validate the file, do not upload.")
    ] = False,
) -> None:
    """Write the submission file and its manifest; upload it to Kaggle unless --dry-run (or
    the competition has no Kaggle page: then the file is kept and nothing is uploaded)."""
    from kit.submit import make_submission

    comp = load_competition(competition)
    status = "writing" if dry_run or not comp.on_kaggle else "writing and uploading"
    with err_console.status(f"{status} the submission for {comp.name}"):
        result = make_submission(
            comp, source, subset_source=subset_source, message=message, dry_run=dry_run
        )
    console.print(submission_summary(result))
