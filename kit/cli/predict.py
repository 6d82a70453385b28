"""`kit predict COMP IMAGE...`: trained models on your own photos (kit.predict)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from kit.cli.app import app
from kit.cli.bars import StepBars
from kit.cli.plain import progress_view
from kit.competition import load_competition
from kit.console import console, err_console

if TYPE_CHECKING:
    from kit.predict import PredictResult
    from kit.progress import Event, OnEvent


@app.command("predict")
def predict_command(
    competition: Annotated[str, typer.Argument(help="Competition name, e.g. facial-keypoints.")],
    images: Annotated[list[Path], typer.Argument(help="Photo files (JPEG, PNG, ...).")],
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Run or stack id (or a unique prefix, or its folder); default: the one "
            "`kit submit` picks (the best CV predicting every keypoint).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output folder (default: a new work/COMP/predict/<UTC time>/)."),
    ] = None,
    box: Annotated[
        str | None,
        typer.Option(
            "--box",
            help="The face as x,y,w,h in the photo's pixels, for every photo (default: the "
            "largest face OpenCV's detector finds; needs `pip install 'kit\\[detect]'`).",
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option("--device", help="auto (default), cpu, cuda, cuda:N or mps."),
    ] = None,
) -> None:
    """Keypoints of your own photos: a CSV in each photo's pixels and a PNG each with them
    drawn. Exits non-zero only when no photo could be predicted."""
    from kit.predict import parse_box, predict_photos

    comp = load_competition(competition)
    face = parse_box(box) if box is not None else None
    view = progress_view(lambda: StepBars(err_console))
    with view as on_event:
        result = predict_photos(
            comp, images, source=source, out=out, box=face, device=device,
            on_event=photo_lines(on_event),
        )  # fmt: skip
    summary(result)


def photo_lines(view: OnEvent) -> OnEvent:
    """Each photo's line printed as it is framed (red when it failed); the rest to `view`."""
    from kit.predict import Failed

    def on_event(event: Event) -> None:
        if event.stage == "predict" and event.what == "photo":
            colour = "red" if isinstance(event.detail, Failed) else "green"
            console.print(f"[{colour}]{escape(event.text)}[/]", soft_wrap=True)
        elif event.stage == "predict":
            err_console.print(escape(event.text), soft_wrap=True)
        else:
            view(event)

    return on_event


def summary(result: PredictResult) -> None:
    source = result.source
    console.print(
        f"{source.kind} [bold]{escape(source.id)}[/] (CV {source.cv_score:.4f}): "
        f"{len(result.keypoints)} keypoints of {len(result.photos)} photo(s)"
        + (f", {len(result.failures)} failed" if result.failures else ""),
        soft_wrap=True,
    )
    console.print(f"keypoints: {escape(str(result.csv))}", soft_wrap=True)
    for photo in result.photos:
        console.print(f"picture: {escape(str(photo.picture))}", soft_wrap=True)
