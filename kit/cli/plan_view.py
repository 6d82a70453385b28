"""The planner's plan as a table: its runs, and once trained what became of each (`kit run`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

from kit.cli.output import (
    clipped,
    compact,
    fit_free_text,
)

if TYPE_CHECKING:
    from kit.planning import Plan
    from kit.planning.outcome import RunOutcome


def plan_table(
    plan: Plan, outcome: list[RunOutcome] | None = None, width: int | None = None
) -> Table:
    """The planner's runs (model, epochs, estimated seconds, config), and with `outcome` what
    each actually took and scored. The free text (config, note) comes last, on one line each,
    cut to fit `width` (the note first): plan.json has the configs, the notes follow the table."""
    title = (
        f"Plan: {len(plan.runs)} runs on {plan.folds} folds, about "
        f"{plan.estimated_seconds:.0f} s and {plan.stack_seconds:.0f} s to stack them, "
        f"of {plan.seconds:.0f} s"
    )
    table = compact(Table(title=title))
    table.add_column("model", no_wrap=True)
    numbers = ("epochs", "seed", "est. s", *(("actual s", "CV") if outcome is not None else ()))
    for name in numbers:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("config")
    if outcome is not None:
        table.add_column("note")
    rows = (
        [o.to_json() for o in outcome] if outcome is not None else [r.describe() for r in plan.runs]
    )
    if outcome is None and plan.search is not None:
        rows.append(_search_row(plan))
    for row in rows:
        config = ", ".join(f"{k}={v}" for k, v in row["overrides"].items()) or "defaults"
        cells: list[str | Text] = [row["name"], str(row["epochs"]), str(row["seed"])]
        cells.append(f"{row['estimated_seconds']:.0f}")
        if outcome is not None:
            cv = "-" if row["cv"] is None else f"{row['cv']:.4f}"
            cells += [f"{row['actual_seconds']:.0f}", cv]
        cells.append(clipped(config))
        if outcome is not None:
            cells.append(clipped(row["note"]))
        table.add_row(*cells)
    if plan.skipped:
        table.caption = "not planned: " + "; ".join(f"{n} ({why})" for n, why in plan.skipped)
    return fit_free_text(table, width, ("note", "config"))


def _search_row(plan: Plan) -> dict:
    """The plan's search as a table row: its trials on fold 0, then the winner on all folds."""
    assert plan.search is not None
    search = plan.search
    return {
        "name": search.name,
        "overrides": {"trials": f"{search.trials} on fold 0, the winner on {search.folds} folds"},
        "epochs": search.epochs,
        "seed": 0,
        "estimated_seconds": search.seconds,
    }
