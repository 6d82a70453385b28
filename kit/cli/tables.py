"""Rich renderings that several commands print: frames, stack and submission results, and the
pipeline's live view (`kit run`, `kit demo`).

Light on purpose: no command registers here and nothing heavy loads at import time (the help
must start fast); a result's own library module is loaded already when it is rendered.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from kit.console import console, err_console

if TYPE_CHECKING:
    import pandas as pd

    from kit.pipeline import PipelineResult
    from kit.planning import Plan
    from kit.progress import Event
    from kit.stack import StackResult
    from kit.submit import SubmissionResult


def frame_table(
    frame: pd.DataFrame, title: str, floats: str = "{:.2f}", caption: str | None = None
) -> Table:
    """A rich table of a DataFrame (numbers right-aligned, floats formatted)."""
    from pandas.api.types import is_numeric_dtype

    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for name in frame.columns:
        table.add_column(str(name), justify="right" if is_numeric_dtype(frame[name]) else "left")
    for row in frame.itertuples(index=False):
        table.add_row(*(floats.format(v) if isinstance(v, float) else str(v) for v in row))
    return table


def _short_names() -> dict[str, str]:
    from kit.stack import BLEND, LIGHTGBM, PICKED, RIDGE

    return {BLEND: "blend", RIDGE: "ridge", LIGHTGBM: "lightgbm", PICKED: "stack"}


def _label(method: str, kind: str, families: dict[str, str]) -> str:
    if kind == "best single":
        return "best single"
    if method in families:  # a run id: family plus the start of its hash
        return f"{families[method]}·{method.rsplit('-', 1)[-1][:6]}"
    return _short_names().get(method, method)


def _cell(value: float, best: float) -> str:
    if not math.isfinite(value):
        return "[dim]-[/]"
    text = f"{value:.4f}"
    return f"[bold green]{text}[/]" if value <= best + 1e-12 else text


def stack_table(result: StackResult) -> Table:
    """Rows: overall, then each keypoint; columns: every method, and the method picked."""
    manifest, frame = result.manifest, result.table
    families = {r["run_id"]: r["family"] for r in manifest.runs}
    labels = [_label(m, k, families) for m, k in zip(frame["method"], frame["kind"], strict=True)]
    metric = manifest.metric.upper()
    table = Table(title=f"Stack {result.stack_id}: CV {metric} (nested; lower is better)")
    table.add_column("keypoint")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("picked")
    short = _short_names()
    for column in ["overall", *manifest.keypoints]:
        values = frame[column].astype(float).tolist()
        best = min((v for v in values if math.isfinite(v)), default=math.inf)
        pick = "" if column == "overall" else short.get(manifest.picks[column], "base")
        if pick == "base":
            run = manifest.picks[column]
            pick = _label(run, "base", families)
        name = f"[bold]{column}[/]" if column == "overall" else column
        table.add_row(name, *(_cell(v, best) for v in values), pick)
    return table


def stack_summary(result: StackResult) -> str:
    from kit.stack import BLEND

    manifest = result.manifest
    methods = manifest.methods
    best = manifest.best_single
    single = methods[best]["overall"]
    ratio = result.cv_score / single if single else math.nan
    lines = [
        f"stack [bold]{result.stack_id}[/] of {len(manifest.runs)} runs: CV "
        f"[bold]{result.cv_score:.4f}[/] ({ratio:.3f} x the best single model {best}, "
        f"{single:.4f}; mean blend {methods[BLEND]['overall']:.4f}); folder {result.path}"
    ]
    fits = [r for axes in manifest.lightgbm_rounds.values() for f in axes for r in f]
    if fits:
        grown = sum(r > 0 for r in fits)
        lines.append(
            f"LightGBM grew trees in {grown} of {len(fits)} coordinate-fold fits (elsewhere its "
            "inner CV kept 0 rounds: the ridge stack alone)"
        )
    if manifest.fallbacks_to_blend:
        few = ", ".join(manifest.fallbacks_to_blend)
        lines.append(
            f"[yellow]too few labelled rows for a meta-model in some folds of: {few} "
            "(the blend was used there)[/]"
        )
    return "\n".join(lines)


def submission_summary(result: SubmissionResult) -> str:
    manifest = result.manifest
    source, eight = manifest.source, manifest.eight_source
    settings = manifest.settings
    lines = [
        f"wrote [bold]{result.path}[/] ({settings['rows']} rows, {settings['images']} images) "
        f"and its manifest {result.manifest_path.name}",
        f"from {source['kind']} {source['id']}: CV {manifest.metric.upper()} "
        f"[bold]{source['cv_score']:.4f}[/]",
    ]
    if eight is not None:
        lines.append(
            f"{settings['images_from_subset']} images that ask only for the eight keypoints "
            f"from {eight['kind']} {eight['id']} (CV on those {manifest.cv['eight']:.4f})"
        )
    if settings.get("values_clipped"):
        lines.append(f"{settings['values_clipped']} values clipped into the image")
    if result.uploaded:
        lines.append(f"[green]uploaded: Kaggle ref {result.kaggle_ref}[/]")
    else:
        lines.append("[yellow]dry run: not uploaded[/] (kit submit without --dry-run uploads)")
    return "\n".join(lines)


def plan_table(plan: Plan, outcome: list[dict] | None = None) -> Table:
    """The planner's runs (model, config, epochs, estimated seconds), and with `outcome` what
    each actually took and scored."""
    title = (
        f"Plan: {len(plan.runs)} runs on {plan.folds} folds, about "
        f"{plan.estimated_seconds:.0f} s and {plan.stack_seconds:.0f} s to stack them, "
        f"of {plan.seconds:.0f} s"
    )
    table = Table(title=title, title_justify="left")
    for name in ("model", "config", "epochs", "seed", "est. s"):
        table.add_column(name, justify="right" if name in ("epochs", "seed", "est. s") else "left")
    if outcome is not None:
        for name in ("actual s", "CV", "note"):
            table.add_column(name, justify="left" if name == "note" else "right")
    rows = outcome if outcome is not None else [r.describe() for r in plan.runs]
    if outcome is None and plan.search is not None:
        rows.append(_search_row(plan))
    for row in rows:
        config = ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) or "defaults"
        cells = [row["name"], config, str(row["epochs"]), str(row["seed"])]
        cells.append(f"{row['estimated_seconds']:.0f}")
        if outcome is not None:
            cv = "-" if row["cv"] is None else f"{row['cv']:.4f}"
            cells += [f"{row['actual_seconds']:.0f}", cv, row["note"]]
        table.add_row(*cells)
    if plan.skipped:
        table.caption = "not planned: " + "; ".join(f"{n} ({why})" for n, why in plan.skipped)
        table.caption_justify = "left"
    return table


def _search_row(plan: Plan) -> dict:
    """The plan's search as a table row: its trials on fold 0, then the winner on all folds."""
    assert plan.search is not None
    search = plan.search
    return {
        "name": f"{search.base}-search",
        "overrides": {"trials": f"{search.trials} on fold 0, the winner on {search.folds} folds"},
        "epochs": search.epochs,
        "seed": 0,
        "estimated_seconds": search.seconds,
    }


class PipelineView:
    """One live table across the stages: state, time, and what the running stage is doing."""

    def __init__(self, budget: float):
        from kit.pipeline import STAGES

        self.stages = STAGES
        self.budget = budget
        self.started = time.monotonic()
        self.state = dict.fromkeys(STAGES, "waiting")
        self.detail = dict.fromkeys(STAGES, "")
        self.begun: dict[str, float] = {}
        self.took: dict[str, float] = {}
        self.live = Live(self.render(), console=err_console, refresh_per_second=4, transient=False)

    def __enter__(self) -> PipelineView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.update(self.render())
        self.live.__exit__(*exc)
        if not err_console.is_terminal:  # a captured Live leaves its last line open
            err_console.print()

    def render(self) -> Group:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for name, justify in (("stage", "left"), ("state", "left"), ("s", "right")):
            table.add_column(name, justify=justify)
        table.add_column("now", overflow="ellipsis", no_wrap=True, max_width=70)
        styles = {"waiting": "dim", "running": "yellow", "done": "green", "skipped": "dim"}
        for stage in self.stages:
            state = self.state[stage]
            seconds = self.took.get(stage)
            if seconds is None and stage in self.begun:
                seconds = time.monotonic() - self.begun[stage]
            table.add_row(
                stage,
                f"[{styles[state]}]{state}[/]",
                "" if seconds is None else f"{seconds:.0f}",
                Text(self.detail[stage], style="dim"),
            )
        elapsed = time.monotonic() - self.started
        head = Text(f"kit run: {elapsed:.0f} s of a {self.budget:.0f} s budget", style="bold")
        return Group(head, table)

    def __call__(self, event: Event) -> None:
        stage = event.stage
        if stage not in self.state:  # a stage's inner work ("train" inside "tune")
            return
        if event.what == "start":
            self.state[stage], self.begun[stage] = "running", time.monotonic()
        elif event.what == "done":
            self.state[stage] = "done"
            self.took[stage] = time.monotonic() - self.begun.get(stage, time.monotonic())
        elif event.text:
            self.detail[stage] = event.text
        if stage == "plan" and event.what == "planned":
            self.live.console.print(plan_table(event.detail))
        self.live.update(self.render())


def print_pipeline_result(result: PipelineResult) -> None:
    """The stack table, the stack and submission summaries, notes, and the time per stage."""
    if result.run_plan is not None:
        console.print(plan_table(result.run_plan, result.plan_outcome))
    console.print(stack_table(result.stack))
    console.print(stack_summary(result.stack))
    console.print(submission_summary(result.submission))
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in result.stage_seconds.items())
    console.print(
        f"pipeline: {result.seconds:.0f} s of a {result.plan.budget:.0f} s budget ({stages}); "
        + _what_trained(result)
    )


def _what_trained(result: PipelineResult) -> str:
    """The planner's runs, or (kit run --epochs) the searched families."""
    if result.run_plan is not None:
        trained = sum(1 for row in result.plan_outcome if row["run_id"])
        return f"{trained} planned models trained on {result.run_plan.folds} folds (plan.json)"
    return (
        f"families {', '.join(result.plan.families)}, "
        f"{result.plan.epochs or 'search-space'} epochs per trial"
    )
