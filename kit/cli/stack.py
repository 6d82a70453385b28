"""`kit stack COMP`: a meta-learner per keypoint coordinate over the runs' OOF (kit.stack)."""

from __future__ import annotations

import math
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kit.cli.app import app
from kit.competition import load_competition
from kit.console import console, err_console
from kit.errors import KitError
from kit.stack import BLEND, FEATURE_SETS, LIGHTGBM, PICKED, RIDGE, StackResult, stack
from kit.training.runs import load_run

SHORT = {BLEND: "blend", RIDGE: "ridge", LIGHTGBM: "lightgbm", PICKED: "stack"}


def _label(method: str, kind: str, families: dict[str, str]) -> str:
    if kind == "best single":
        return "best single"
    if method in families:  # a run id: family plus the start of its hash
        return f"{families[method]}·{method.rsplit('-', 1)[-1][:6]}"
    return SHORT.get(method, method)


def _cell(value: float, best: float) -> str:
    if not math.isfinite(value):
        return "[dim]-[/]"
    text = f"{value:.4f}"
    return f"[bold green]{text}[/]" if value <= best + 1e-12 else text


def stack_table(result: StackResult) -> Table:
    """Rows: overall, then each keypoint; columns: every method, and the method picked."""
    manifest, frame = result.manifest, result.table
    families = {r["run_id"]: r["family"] for r in manifest["runs"]}
    labels = [_label(m, k, families) for m, k in zip(frame["method"], frame["kind"], strict=True)]
    metric = manifest["metric"].upper()
    table = Table(title=f"Stack {result.stack_id}: CV {metric} (nested; lower is better)")
    table.add_column("keypoint")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("picked")
    for column in ["overall", *manifest["keypoints"]]:
        values = frame[column].astype(float).tolist()
        best = min((v for v in values if math.isfinite(v)), default=math.inf)
        pick = "" if column == "overall" else SHORT.get(manifest["picks"][column], "base")
        if pick == "base":
            run = manifest["picks"][column]
            pick = _label(run, "base", families)
        name = f"[bold]{column}[/]" if column == "overall" else column
        table.add_row(name, *(_cell(v, best) for v in values), pick)
    return table


def stack_summary(result: StackResult) -> str:
    manifest = result.manifest
    methods = manifest["methods"]
    best = manifest["best_single"]
    single = methods[best]["overall"]
    ratio = result.cv_score / single if single else math.nan
    lines = [
        f"stack [bold]{result.stack_id}[/] of {len(manifest['runs'])} runs: CV "
        f"[bold]{result.cv_score:.4f}[/] ({ratio:.3f} x the best single model {best}, "
        f"{single:.4f}; mean blend {methods[BLEND]['overall']:.4f}); folder {result.path}"
    ]
    fits = [r for axes in manifest.get("lightgbm_rounds", {}).values() for f in axes for r in f]
    if fits:
        grown = sum(r > 0 for r in fits)
        lines.append(
            f"LightGBM grew trees in {grown} of {len(fits)} coordinate-fold fits (elsewhere its "
            "inner CV kept 0 rounds: the ridge stack alone)"
        )
    if manifest.get("fallbacks_to_blend"):
        few = ", ".join(manifest["fallbacks_to_blend"])
        lines.append(
            f"[yellow]too few labelled rows for a meta-model in some folds of: {few} "
            "(the blend was used there)[/]"
        )
    return "\n".join(lines)


def parse_features(text: str | None) -> frozenset[str]:
    chosen = frozenset(f.strip() for f in (text or "").split(",") if f.strip())
    unknown = sorted(chosen - set(FEATURE_SETS))
    if unknown:
        raise KitError(
            f"--features: unknown {', '.join(unknown)}", hint=f"valid: {', '.join(FEATURE_SETS)}"
        )
    return chosen


@app.command("stack")
def stack_command(
    competition: Annotated[str, typer.Argument(help="Competition name, e.g. facial-keypoints.")],
    runs: Annotated[
        str | None,
        typer.Option("--runs", help="Comma list of run ids (default: the best per family)."),
    ] = None,
    per_family: Annotated[
        int, typer.Option("--per-family", min=1, help="Best runs per family by default.")
    ] = 2,
    features: Annotated[
        str | None,
        typer.Option(
            "--features",
            help="Extra LightGBM features, comma list: coords (the other coordinates' "
            "predictions), diffs (each model minus the blend, and their spread), image "
            "(brightness, contrast, gradients, asymmetry).",
        ),
    ] = None,
) -> None:
    """Stack finished runs: per coordinate a ridge and a LightGBM meta-model on their OOF."""
    comp = load_competition(competition)
    chosen = None
    if runs:
        chosen = [load_run(comp, r.strip()) for r in runs.split(",") if r.strip()]
    progress = Progress(
        TextColumn("stacking"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[dim]{task.fields[now]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    with progress:
        task = progress.add_task("stack", total=None, now="")

        def report(done: int, total: int, text: str) -> None:
            progress.update(task, completed=done, total=total, now=text)

        result = stack(
            comp,
            chosen,
            per_family=per_family,
            features=parse_features(features),
            report=report,
            warn=lambda text: err_console.print(f"[yellow]{text}[/]"),
        )
    if result.reused:
        console.print(f"[green]reusing finished stack {result.stack_id}[/] (same runs, settings)")
    console.print(stack_table(result))
    console.print(stack_summary(result))
