"""The report's page: the headline and one section per question (what was trained, how each
keypoint scored, what the stack did, how training went, where it fails, what tuning found,
whether the plan held, what was submitted); inline CSS and base64 PNGs, no scripts, nothing
fetched. A section with nothing to show says so in one line."""

from __future__ import annotations

from datetime import UTC, datetime

from kit.report import pictures
from kit.report.history import (
    curves_section,
    plan_section,
    submissions_section,
    tuning_section,
    worst_section,
)
from kit.report.html import CSS, esc, num, plural
from kit.report.records import WorkFolder
from kit.report.trained import keypoints_section, runs_section, stack_section

SECTIONS = (
    ("runs", "Runs"),
    ("keypoints", "CV per keypoint"),
    ("stack", "Stack"),
    ("curves", "Learning curves"),
    ("worst", "Worst out-of-fold faces"),
    ("tuning", "Tuning"),
    ("plan", "Plan against what happened"),
    ("submissions", "Submissions"),
)


def section(key: str, body: str) -> str:
    """One section with its heading; its id is the navigation bar's anchor."""
    title = dict(SECTIONS)[key]
    return f'<section id="{key}"><h2>{esc(title)}</h2>\n{body}\n</section>'


def render_page(
    folder: WorkFolder, faces: pictures.Faces | None, generated: datetime | None = None
) -> str:
    """The whole page of `folder`; `faces` (the cached training faces) draws the worst
    faces that are not on disk."""
    stamp = (generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    title = esc(f"{folder.competition}: what was trained")
    nav = "".join(f'<a href="#{key}">{esc(name)}</a>' for key, name in SECTIONS)
    body = [
        section("runs", runs_section(folder)),
        section("keypoints", keypoints_section(folder)),
        section("stack", stack_section(folder)),
        section("curves", curves_section(folder)),
        section("worst", worst_section(folder, faces)),
        section("tuning", tuning_section(folder.tuning, folder.metric)),
        section("plan", plan_section(folder.plan)),
        section("submissions", submissions_section(folder)),
    ]
    notes = "".join(f"<p class='muted'>{esc(n)}</p>" for n in folder.notes)
    summary = "<br>".join(esc(line) for line in summary_lines(folder))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{CSS}</style></head>
<body>
<h1>{title}</h1>
<p class="muted">generated {stamp} by kit report from {esc(folder.root)}</p>
<div class="summary">{summary}</div>
<nav>{nav}</nav>
{"".join(body)}
{notes}
</body></html>
"""


def summary_lines(folder: WorkFolder) -> list[str]:
    """The headline: how much was trained, the best model, the plan, tuning, submissions."""
    metric = folder.metric.upper()
    done = folder.complete_runs
    lines = [
        f"{plural(len(folder.runs), 'run')} ({len(done)} on every fold), "
        f"{plural(len(folder.stacks), 'stack')}"
    ]
    if done:
        lines.append(f"best run: {done[0].run_id}, CV {metric} {num(done[0].cv_score)}")
    if folder.stacks:
        best = folder.stacks[0]
        lines.append(f"best stack: {best.stack_id}, CV {metric} {num(best.cv_score)}")
    if folder.plan is not None:
        plan = folder.plan
        lines.append(
            f"last kit run: {len(plan.trained)} of {len(plan.rows)} planned runs trained in "
            f"{plan.actual_seconds:.0f} s (estimated {plan.estimated_seconds:.0f} s)"
        )
    if folder.tuning is not None:
        trials = sum(len(s.trials) for s in folder.tuning.studies)
        studies = plural(len(folder.tuning.studies), "study", "studies")
        lines.append(f"tuning: {plural(trials, 'trial')} in {studies}")
    if folder.submissions:
        scored = [s.public for s in folder.submissions if s.public is not None]
        public = f"; best public score {num(min(scored))}" if scored else ""
        lines.append(f"{plural(len(folder.submissions), 'submission')}{public}")
    return lines
