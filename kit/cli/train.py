"""`kit train COMP MODEL`: K-fold training with OOF and test predictions (kit.training.runs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from kit.cli.app import app
from kit.cli.plain import progress_view
from kit.competition import load_competition
from kit.console import console, err_console
from kit.training.targets import TARGET_SETS  # light (numpy): the --target-set help lists them

if TYPE_CHECKING:
    from kit.progress import Event
    from kit.training.loop import EpochReport
    from kit.training.runs import FoldEvent


class TrainProgress:
    """One rich bar per fold and sub-model: epochs done, latest and best validation score."""

    def __init__(self, metric: str):
        self.metric = metric
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:>3.0f}/{task.total:.0f} ep"),
            TextColumn("{task.fields[scores]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=False,
        )
        self.tasks: dict[tuple[int, str], TaskID] = {}

    def __enter__(self) -> TrainProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, event: Event) -> None:
        if event.what == "epoch":
            self.on_epoch(event.detail)
        elif event.what == "fold":
            self.on_fold(event.detail)

    def on_epoch(self, report: EpochReport) -> None:
        key = (report.fold, report.submodel)
        if key not in self.tasks:
            name = "" if report.submodel == "main" else f" {report.submodel}"
            self.tasks[key] = self.progress.add_task(
                f"fold {report.fold}{name}", total=report.epochs, scores=""
            )
        scores = f"val {self.metric} {report.val_score:.3f} (best {report.best_score:.3f})"
        self.progress.update(self.tasks[key], completed=report.epoch, scores=scores)

    def on_fold(self, event: FoldEvent) -> None:
        if event.status == "resumed":
            self.progress.console.print(f"fold {event.fold}: finished earlier, reused")
        elif event.status == "done":
            for (fold, _), task in self.tasks.items():
                if fold == event.fold:  # early stopping may end before the last epoch
                    self.progress.update(task, total=self.progress.tasks[task].completed)
            self.progress.console.print(
                f"fold {event.fold}: {self.metric} {event.score:.4f} in {event.seconds:.0f} s"
            )


MAX_KEYPOINT_ROWS = 30  # beyond this (ibug-68), the table lists groups and the worst keypoints


def _fold_table(manifest: dict) -> Table:
    metric = manifest.metric
    table = Table(title=f"{manifest.family} · {manifest.target_set} · CV by fold")
    for column in ("fold", "rows", metric, "epochs", "seconds"):
        table.add_column(column, justify="right")
    for fold, scores in manifest.fold_scores.items():
        epochs = "/".join(str(e) for e in manifest.fold_epochs[fold].values())
        seconds = f"{manifest.fold_seconds[fold]:.0f}"
        table.add_row(fold, str(scores["rows"]), f"{scores['overall']:.4f}", epochs, seconds)
    cv = manifest.cv
    total = f"{manifest.train_seconds:.0f}"
    table.add_row("CV", str(cv["rows"]), f"[bold]{cv['overall']:.4f}[/]", "", total)
    return table


def _keypoint_table(manifest: dict) -> Table:
    cv, metric = manifest.cv, manifest.metric
    per_keypoint = cv["per_keypoint"]
    shown = list(per_keypoint.items())
    title = f"CV {metric} per keypoint"
    if len(shown) > MAX_KEYPOINT_ROWS:
        shown = sorted(shown, key=lambda item: -item[1])[:10]
        title += f" (the 10 worst of {len(per_keypoint)}; all in manifest.json)"
    table = Table(title=title)
    table.add_column("keypoint")
    table.add_column(metric, justify="right")
    with_nme = cv.get("nme") is not None
    if with_nme:
        table.add_column("NME %", justify="right")
    for name, score in shown:
        table.add_row(name, f"{score:.4f}", *([""] if with_nme else []))
    for name, score in cv["per_group"].items():
        nme = [f"{cv['nme_per_group'][name]:.3f}"] if with_nme else []
        table.add_row(f"[dim]group {name}[/]", f"{score:.4f}", *nme)
    table.add_row(
        "[bold]all[/]",
        f"[bold]{cv['overall']:.4f}[/]",
        *([f"[bold]{cv['nme']:.3f}[/]"] if with_nme else []),
    )
    return table


@app.command("train")
def train_command(
    competition: Annotated[str, typer.Argument(help="Competition name, e.g. facial-keypoints.")],
    model: Annotated[str, typer.Argument(help="Model family: sp, lenet, convbn, resnet, heatmap.")],
    folds: Annotated[
        int | None,
        typer.Option(
            "--folds",
            help="Train only the first K folds of the folds file (quick runs; the partition "
            "never changes, OOF then covers those folds' rows only).",
        ),
    ] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Epochs per fold.")] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option("--set", help="Hyperparameter override key=value (repeatable)."),
    ] = None,
    target_set: Annotated[
        str,
        typer.Option(
            "--target-set",
            help=f"Missing-label strategy: {', '.join(TARGET_SETS)}, or one that the "
            "competition declares in competition.toml's [target_sets].",
        ),
    ] = "masked",
    keypoints: Annotated[
        str | None,
        typer.Option("--keypoints", help="A subset from competition.toml or a comma list."),
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto (default), cpu, cuda, cuda:N or mps.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Run seed (default 0).")] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            help="Folds trained at once in worker processes, one thread each (CPU only; on a "
            "2-core CPU 2 trains heatmap folds about twice as fast as 1).",
        ),
    ] = 1,
) -> None:
    """Train MODEL on every fold; write OOF and test predictions, checkpoints and a manifest."""
    from kit.training.config import parse_overrides
    from kit.training.runs import train_run

    comp = load_competition(competition)
    overrides = parse_overrides(settings or [])
    with progress_view(lambda: TrainProgress(comp.metric), metric=comp.metric) as progress:
        result = train_run(
            comp,
            model,
            overrides,
            folds=folds,
            epochs=epochs,
            target_set=target_set,
            keypoints=keypoints,
            device=device,
            seed=seed,
            on_event=progress,
            workers=workers,
        )
    if result.reused:
        console.print(f"[green]reusing finished run {result.run_id}[/] (nothing to train)")
    console.print(_fold_table(result.manifest))
    console.print(_keypoint_table(result.manifest))
    console.print(
        f"run [bold]{result.run_id}[/]: CV {comp.metric} [bold]{result.cv_score:.4f}[/] "
        f"over {result.manifest.folds['rows_predicted']} rows; folder {result.path}"
    )
    pseudo = result.manifest.pseudo
    if pseudo:
        strict = "strict " if pseudo["strict"] else ""
        weight = result.manifest.config["train"]["pseudo_weight"]
        console.print(
            f"trained with the {strict}pseudo-label set {pseudo['id']} at weight {weight} "
            f"(teacher {pseudo['teacher']}); CV on true labels only"
        )
