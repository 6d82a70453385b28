"""`kit tune COMP`: Optuna studies per model family, then the best trials on all folds (kit.tuning).

The search objective is fold 0 of the shared folds file (one pruning value per step, and 1/K of
the cost of a full CV per trial); the best --best trials per family are then trained on every
fold, reusing fold 0, so OOF and test predictions exist for `kit stack`. See kit/tuning/__init__.py.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from kit.cli.app import app, comma_list
from kit.cli.plain import progress_view
from kit.competition import load_competition
from kit.console import console, err_console
from kit.tuning.settings import HEARTBEAT_SECONDS, PRUNERS

if TYPE_CHECKING:
    import pandas as pd

    from kit.progress import Event
    from kit.tuning import TuneEvent


class TuneProgress:
    """One rich bar per family: finished trials of the study, best fold-0 score, activity."""

    def __init__(self, metric: str):
        self.metric = metric
        self.progress = Progress(
            TextColumn("{task.description:<8}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"),
            TextColumn("[dim]{task.fields[now]}"),
            TimeElapsedColumn(),
            console=err_console,
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> TuneProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, progress: Event) -> None:
        event: TuneEvent = progress.detail
        if event.family not in self.tasks:
            self.tasks[event.family] = self.progress.add_task(
                event.family, total=event.target, best="-", now=""
            )
        task = self.tasks[event.family]
        update: dict = {"now": event.text}
        if event.kind in ("search", "trial_end"):
            update.update(completed=event.done, total=event.target)
            if event.best is not None:
                update["best"] = f"{event.best:.4f}"
        self.progress.update(task, **update)


def trials_table(table: pd.DataFrame, metric: str, title: str) -> Table:
    """The trials, best first per family; the best CV per family in bold green."""
    out = Table(
        title=title,
        box=box.SIMPLE_HEAD,
        caption="* the family's default config; ep = epochs run/budget",
    )
    out.add_column("family", no_wrap=True)
    out.add_column("trial", justify="right", no_wrap=True)
    out.add_column("state", no_wrap=True)
    out.add_column(f"fold-0 {metric}", justify="right", no_wrap=True)
    out.add_column(f"CV {metric}", justify="right", no_wrap=True)
    out.add_column("time", justify="right", no_wrap=True)
    out.add_column("key params", ratio=1)
    best = set(table[table["cv"].notna()].groupby("family")["cv"].idxmin()) if len(table) else set()
    for index, row in table.iterrows():
        cv = "" if math.isnan(row["cv"]) else f"{row['cv']:.4f}"
        out.add_row(
            row["family"],
            f"{row['trial']}{'*' if row['default'] else ''}",
            row["state"].lower(),
            "" if math.isnan(row["score"]) else f"{row['score']:.4f}",
            f"[bold green]{cv}[/]" if index in best else cv,
            "" if math.isnan(row["seconds"]) else f"{row['seconds']:.0f} s",
            row["key_params"] + (f"\n[red]{escape(row['error'])}[/]" if row["error"] else ""),
        )
    return out


@app.command("tune")
def tune_command(
    competition: Annotated[str, typer.Argument(help="Competition name, e.g. facial-keypoints.")],
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            help="Target of finished trials per family study, over all runs and workers "
            "(rerunning continues to it). Default 20 unless --timeout is given.",
        ),
    ] = None,
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            help="Search time, e.g. 30m, 2h, 90s, split over families; a trial that would "
            "overrun it stops at an epoch's end.",
        ),
    ] = None,
    families: Annotated[
        str | None,
        typer.Option("--families", help="Comma list, e.g. sp,resnet,heatmap (default: all)."),
    ] = None,
    best: Annotated[
        int,
        typer.Option("--best", help="Best trials per family to train on all folds (0: none)."),
    ] = 2,
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="Fix every trial's epochs (not searched).")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Optuna RDB URL shared by workers, e.g. postgresql://user:pass@host/db "
            "(default: sqlite file WORK/COMP/tune.sqlite3).",
        ),
    ] = None,
    gpus: Annotated[
        str | None, typer.Option("--gpus", help="One worker process per GPU, e.g. 0,1.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="N CPU worker processes, each on its share of the cores."),
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="auto (default), cpu, cuda, cuda:N or mps.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampler seed.")] = 0,
    pruner: Annotated[
        str, typer.Option("--pruner", help=f"Pruner: {', '.join(PRUNERS)}.")
    ] = "median",
    heartbeat: Annotated[
        int,
        typer.Option(
            "--heartbeat",
            help="Seconds between trial heartbeats; a trial silent for twice that is failed "
            "and re-queued once.",
        ),
    ] = HEARTBEAT_SECONDS,
    show: Annotated[
        bool, typer.Option("--show", help="Print the trials table of existing studies; no tuning.")
    ] = False,
) -> None:
    """Tune model families with Optuna on fold 0, then train the best trials on all folds.

    One study per family ("COMP/family"). A trial trains fold 0 of the shared folds file only:
    its score is the objective, and the pruner gets fold 0's best validation score at 10 %, 20 %,
    ... of the trial's epoch budget (one value per step, comparable across schedules). The
    --best trials per family are then trained on every fold (fold 0 is reused) so that OOF and
    test predictions exist for `kit stack`; the table shows fold-0 and CV scores. Studies live
    in WORK/COMP/tune.sqlite3 (or --storage), continue where they stopped when rerun, and open in
    optuna-dashboard.
    """
    import optuna

    from kit.durations import parse_duration
    from kit.tuning import tune, tuning_table

    comp = load_competition(competition)
    names = comma_list(families)
    title = f"{comp.name} tuning: {comp.metric} on fold 0 and CV on all folds (lower is better)"
    if show:
        table = tuning_table(comp, storage, names)
        if table.empty:
            console.print(f"no trials yet for {comp.name}")
        else:
            console.print(trials_table(table, comp.metric, title))
        return
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bars say it
    seconds = None if timeout is None else parse_duration(timeout)
    view = progress_view(lambda: TuneProgress(comp.metric), budget=seconds, metric=comp.metric)
    with view as progress:
        result = tune(
            comp,
            names,
            trials=trials,
            timeout=seconds,
            storage=storage,
            best_n=best,
            epochs=epochs,
            device=device,
            on_event=progress,
            seed=seed,
            pruner=pruner,
            gpus=comma_list(gpus),
            workers=workers,
            heartbeat=heartbeat,
        )
    console.print(trials_table(result.table, comp.metric, title))
    for family, runs in result.best_runs.items():
        for run in runs:
            console.print(
                f"{family}: run [bold]{run.run_id}[/] CV {run.cv_score:.4f} in {run.path}",
                soft_wrap=True,
            )
    console.print(f"studies {', '.join(result.studies)}; browse them with:")
    console.print(f"  optuna-dashboard '{result.storage}'", soft_wrap=True)
