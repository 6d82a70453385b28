"""`kit submit COMP`: write, validate and (unless --dry-run) upload a submission (kit.submit)."""

from __future__ import annotations

from typing import Annotated

import typer

from kit.cli.app import app
from kit.competition import load_competition
from kit.console import console, err_console
from kit.submit import SubmissionResult, make_submission


def submission_summary(result: SubmissionResult) -> str:
    manifest = result.manifest
    source, eight = manifest["source"], manifest["eight_source"]
    settings = manifest["settings"]
    lines = [
        f"wrote [bold]{result.path}[/] ({settings['rows']} rows, {settings['images']} images) "
        f"and its manifest {result.manifest_path.name}",
        f"from {source['kind']} {source['id']}: CV {manifest['metric'].upper()} "
        f"[bold]{source['cv_score']:.4f}[/]",
    ]
    if eight is not None:
        lines.append(
            f"{settings['images_from_subset']} images that ask only for the eight keypoints "
            f"from {eight['kind']} {eight['id']} (CV on those {manifest['cv']['eight']:.4f})"
        )
    if settings.get("values_clipped"):
        lines.append(f"{settings['values_clipped']} values clipped into the image")
    if result.uploaded:
        lines.append(f"[green]uploaded: Kaggle ref {result.kaggle_ref}[/]")
    else:
        lines.append("[yellow]dry run: not uploaded[/] (kit submit without --dry-run uploads)")
    return "\n".join(lines)


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
    eight_source: Annotated[
        str | None,
        typer.Option(
            "--eight-from",
            help="Run or stack for the images that ask only for the eight keypoints "
            "(facial-keypoints' 8 + 30 split); 'none' turns it off; default: the best CV on "
            "those keypoints.",
        ),
    ] = None,
    message: Annotated[str, typer.Option("--message", "-m", help="Submission description.")] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Write and validate the file, do not upload.")
    ] = False,
) -> None:
    """Write the submission file and its manifest; upload it to Kaggle unless --dry-run."""
    comp = load_competition(competition)
    status = "writing" if dry_run else "writing and uploading"
    with err_console.status(f"{status} the submission for {comp.name}"):
        result = make_submission(
            comp, source, eight_source=eight_source, message=message, dry_run=dry_run
        )
    console.print(submission_summary(result))
