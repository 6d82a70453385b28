"""Rich renderings that several commands print: frames, stack tables and summaries, and the
submission summary (the plan: kit.cli.plan_view; `kit run`'s live view: kit.cli.pipeline_view).

Light on purpose: no command registers here and nothing heavy loads at import time (the help
must start fast); a result's own library module is loaded already when it is rendered.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.table import Table

from kit.cli.labels import keypoint_labels, legend, model_labels
from kit.cli.output import (
    compact,
    natural_width,
    records,
)

if TYPE_CHECKING:
    import pandas as pd

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

    return {BLEND: "blend", RIDGE: "ridge", LIGHTGBM: "lgbm", PICKED: "stack"}


@dataclass(frozen=True)
class StackColumn:
    """One method of the stack table: its full name (the CSV's header), label and kind."""

    method: str
    label: str
    kind: str  # base, blend, best single, stack
    overall: float


def stack_frame(result: StackResult) -> pd.DataFrame:
    """The stack table with full names (`--format csv|json`): rows overall and each keypoint,
    a column per method (run ids, `mean blend`, ...), then the method picked per keypoint."""
    import pandas as pd

    manifest, frame = result.manifest, result.table
    rows = []
    for name in ["overall", *manifest.keypoints]:
        row: dict[str, Any] = {"keypoint": name}
        row.update(zip(frame["method"], frame[name].astype(float), strict=True))
        row["picked"] = "" if name == "overall" else manifest.picks[name]
        rows.append(row)
    return pd.DataFrame(rows)


def stack_data(result: StackResult) -> dict[str, Any]:
    """`kit stack --format json`: the stack's id, metric and CV, and its table's rows."""
    manifest = result.manifest
    return {
        "stack_id": result.stack_id,
        "metric": manifest.metric,
        "cv": result.cv_score,
        "best_single": manifest.best_single,
        "runs": [r["run_id"] for r in manifest.runs],
        "rows": records(stack_frame(result)),
    }


def stack_columns(result: StackResult) -> list[StackColumn]:
    """The table's methods with short labels: base runs as `heat.26` (kit.cli.labels), the
    best single model as `single`, the meta-models as `blend`, `ridge`, `lgbm`, `stack`."""
    frame, short = result.table, _short_names()
    runs = [m for m, k in zip(frame["method"], frame["kind"], strict=True) if k == "base"]
    reserved = {*short.values(), "single", "keypoint", "picked"}
    labels = {**model_labels(runs, reserved), **short}
    return [
        StackColumn(method, "single" if kind == "best single" else labels[method], kind, score)
        for method, kind, score in zip(
            frame["method"], frame["kind"], frame["overall"].astype(float), strict=True
        )
    ]


def _drop_order(columns: list[StackColumn]) -> list[StackColumn]:
    """Which columns a narrow terminal loses first: the base runs, worst CV first, then the
    blend, the best single model, LightGBM and ridge; the picked stack always stays."""
    from kit.stack import BLEND, LIGHTGBM, RIDGE

    bases = sorted((c for c in columns if c.kind == "base"), key=lambda c: -_finite(c.overall))
    later = {BLEND: 0, "best single": 1, LIGHTGBM: 2, RIDGE: 3}
    rest = [c for c in columns if c.method in later or c.kind == "best single"]
    rest.sort(key=lambda c: later["best single" if c.kind == "best single" else c.method])
    return bases + rest


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def _cell(value: float, best: float) -> str:
    if not math.isfinite(value):
        return "[dim]-[/]"
    text = f"{value:.4f}"
    return f"[bold green]{text}[/]" if value <= best + 1e-12 else text


def stack_table(result: StackResult, width: int | None = None) -> Table:
    """Rows: overall, then each keypoint; columns: every method, and the method picked. Labels
    are short and whole (a legend in the caption maps them back); where the table is wider than
    `width`, the least telling columns are left out and the caption names them."""
    columns = stack_columns(result)
    hidden: list[StackColumn] = []
    droppable = _drop_order(columns)
    table = _stack_table(result, columns, hidden)
    while width is not None and droppable and natural_width(table) > width:
        hidden.append(droppable.pop(0))
        table = _stack_table(result, columns, hidden)
    return table


def _stack_table(
    result: StackResult, columns: list[StackColumn], hidden: list[StackColumn]
) -> Table:
    manifest, frame = result.manifest, stack_frame(result)
    shown = [c for c in columns if c not in hidden]
    by_method = {c.method: c.label for c in columns}
    keys = keypoint_labels(manifest.keypoints, reserved={"overall"})
    metric = manifest.metric.upper()
    table = Table(title=f"Stack {result.stack_id}: CV {metric} (nested; lower is better)")
    table.caption = _stack_legend(result, columns, keys, hidden)
    compact(table)
    table.add_column("keypoint", no_wrap=True)
    for column in shown:
        table.add_column(column.label, justify="right", no_wrap=True)
    table.add_column("picked", no_wrap=True)
    for row in frame.itertuples(index=False):
        name, values = row[0], dict(zip(frame.columns, row, strict=True))
        best = min((_finite(values[c.method]) for c in columns), default=math.inf)
        label = "[bold]overall[/]" if name == "overall" else keys[name]
        pick = by_method.get(values["picked"], values["picked"])
        table.add_row(label, *(_cell(values[c.method], best) for c in shown), pick)
    return table


def _stack_legend(
    result: StackResult,
    columns: list[StackColumn],
    keys: dict[str, str],
    hidden: list[StackColumn],
) -> str:
    """The caption: what the short keypoint and model labels stand for, and what was left out."""
    bases = {c.method: c.label for c in columns if c.kind == "base"}
    cvs = {c.method: f"CV {c.overall:.4f}" for c in columns if c.kind == "base"}
    best = bases.get(result.manifest.best_single, result.manifest.best_single)
    lines = []
    if keypoints := legend(keys):
        lines.append(f"keypoints: {keypoints}")
    if models := legend(bases, cvs):
        lines.append(f"models: {models}")
    lines.append(
        f"single: the best single model ({best}); blend: their mean; ridge, lgbm: the ridge "
        "and LightGBM stacks; stack: per keypoint, single, ridge or lgbm, as nested CV picked"
    )
    if hidden:
        lines.append(
            f"not shown, for width: {', '.join(c.label for c in hidden)} "
            "(--wide or --format csv|json shows every column)"
        )
    return "\n".join(lines)


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
    lines.append(_picks_line(manifest.picks))
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


def _picks_line(picks: dict[str, str]) -> str:
    """How many keypoints each candidate was picked for (the best single model by its run)."""
    counts = Counter(picks.values()).most_common()
    return "picked per keypoint: " + ", ".join(f"{method} {n}" for method, n in counts)


def submission_summary(result: SubmissionResult) -> str:
    manifest = result.manifest
    source, subset_source = manifest.source, manifest.subset_source
    settings = manifest.settings
    lines = [
        f"wrote [bold]{result.path}[/] ({settings['rows']} rows, {settings['images']} images) "
        f"and its manifest {result.manifest_path.name}",
        f"from {source['kind']} {source['id']}: CV {manifest.metric.upper()} "
        f"[bold]{source['cv_score']:.4f}[/]",
    ]
    if subset_source is not None:
        lines.append(
            f"{settings['images_from_subset']} images that ask only for the {manifest.subset} "
            f"keypoints from {subset_source['kind']} {subset_source['id']} "
            f"(CV on those {manifest.cv[manifest.subset]:.4f})"
        )
    if settings.get("values_clipped"):
        lines.append(f"{settings['values_clipped']} values clipped into the image")
    if result.uploaded:
        lines.append(f"[green]uploaded: Kaggle ref {result.kaggle_ref}[/]")
    elif manifest.upload_skipped:
        lines.append(f"[yellow]not uploaded:[/] {manifest.upload_skipped}")
    else:
        lines.append("[yellow]dry run: not uploaded[/] (kit submit without --dry-run uploads)")
    return "\n".join(lines)
