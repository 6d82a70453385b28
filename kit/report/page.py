"""The report's HTML: one section per question (what was trained, how each keypoint scored,
what the stack did, how training went, where it fails, what tuning found, whether the plan
held, what was submitted), with tables, inline CSS and base64 PNGs; no scripts, nothing
fetched. A section with nothing to show says so in one line."""

from __future__ import annotations

import base64
import html
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from kit.errors import KitError
from kit.report import pictures
from kit.report.records import (
    PlanRecord,
    StudyRecord,
    SubmissionRecord,
    TuningRecord,
    WorkFolder,
    is_complete,
)
from kit.stack import PICKED, StackResult
from kit.track.report import CSS as TRACK_CSS
from kit.training.runs import RunResult

CSS = (
    TRACK_CSS
    + """
body { max-width: 1200px; padding: 0 1em; }
img { box-sizing: border-box; } code { white-space: nowrap; }
nav { margin: 0.8em 0; } nav a { margin-right: 1em; }
.scroll { overflow-x: auto; }
table.keys { font-size: 0.8em; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: bold; color: #17702a; } td.when { white-space: nowrap; }
tr.partial td { color: #777; }
p.none { color: #777; font-style: italic; }
details { margin: 0.3em 0 0.8em; } summary { cursor: pointer; font-weight: 600; }
.bar { display: inline-block; height: 0.8em; background: #3b6fd6; vertical-align: middle; }
"""
)
TRIALS_SHOWN = 10  # per family, best first
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


# ------------------------------------------------------------------------------- small parts


def esc(value: object) -> str:
    return html.escape(str(value))


def num(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def when(created: str) -> str:
    """A manifest's ISO time as a 'YYYY-MM-DD HH:MM' cell that does not wrap."""
    return f'<td class="when">{esc(created[:16].replace("T", " "))}</td>'


def plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def none(text: str) -> str:
    return f'<p class="none">{esc(text)}</p>'


def image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def table(
    head: Sequence[str],
    rows: Iterable[Sequence[str]],
    css: str = "",
    row_classes: Sequence[str] | None = None,
) -> str:
    """A table of already-escaped cells (a cell may bring its own <td ...>); the header is
    escaped here. A "keys" table (many columns) scrolls sideways rather than squeeze."""
    header = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = []
    for i, row in enumerate(rows):
        css_row = row_classes[i] if row_classes else ""
        attr = f' class="{css_row}"' if css_row else ""
        body.append(f"<tr{attr}>{''.join(_cell(c) for c in row)}</tr>")
    opening = '<div class="scroll">' if "keys" in css else "<div>"
    return (
        f'{opening}<table class="{css}"><thead><tr>{header}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _cell(cell: str) -> str:
    return cell if cell.startswith("<td") else f"<td>{cell}</td>"


def number_cell(value: float | None, best: bool = False, digits: int = 4) -> str:
    css = "num best" if best else "num"
    return f'<td class="{css}">{num(value, digits)}</td>'


def section(key: str, body: str) -> str:
    title = dict(SECTIONS)[key]
    return f'<section id="{key}"><h2>{esc(title)}</h2>\n{body}\n</section>'


# ------------------------------------------------------------------------------- the page


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
        best = f"; best public score {num(min(scored))}" if scored else ""
        lines.append(f"{plural(len(folder.submissions), 'submission')}{best}")
    return lines


# ------------------------------------------------------------------------------- runs


def runs_section(folder: WorkFolder) -> str:
    if not folder.runs:
        return none("no finished run in this work folder")
    stacked = {r["run_id"] for s in folder.stacks[:1] for r in s.manifest.runs}
    best = folder.complete_runs[0].cv_score if folder.complete_runs else math.nan
    rows = [_run_row(run, run.run_id in stacked, run.cv_score <= best) for run in folder.runs]
    classes = ["" if is_complete(run) else "partial" for run in folder.runs]
    head = ["run", "family", "folds", f"CV {folder.metric.upper()}", "epochs", "train s"]
    head += ["device", "settings (not the family's defaults)", "in the stack", "created"]
    partial = len(folder.runs) - len(folder.complete_runs)
    note = (
        f"<p class='muted'>{partial} run(s) in grey trained only some folds (tuning trials): "
        "their CV is not comparable and they are left out below.</p>"
        if partial
        else ""
    )
    return table(head, rows, row_classes=classes) + note


def _run_row(run: RunResult, stacked: bool, best: bool) -> list[str]:
    m = run.manifest
    folds = m.folds
    trained = len(folds.get("trained", []))
    return [
        f"<td><code>{esc(run.run_id)}</code></td>",
        esc(m.family),
        f"{trained}/{folds.get('total', trained)}",
        number_cell(run.cv_score, best and is_complete(run)),
        esc(_epochs(run)),
        seconds(m.train_seconds),
        esc(m.device or "-"),
        esc(config_changes(run)),
        "yes" if stacked else "",
        when(m.created),
    ]


def _epochs(run: RunResult) -> str:
    """'8' (every fold ran its 8), or '5-8 of 8' when early stopping cut some folds short."""
    planned = run.manifest.config.get("train", {}).get("epochs")
    ran = [e for fold in run.manifest.fold_epochs.values() for e in fold.values()]
    if not ran:
        return str(planned or "-")
    low, high = min(ran), max(ran)
    if low == high == planned:
        return str(planned)
    span = str(low) if low == high else f"{low}-{high}"
    return f"{span} of {planned}" if planned else span


def config_changes(run: RunResult) -> str:
    """The run's settings that differ from its family's defaults (epochs and seed aside)."""
    from kit.training.config import resolve_config

    try:
        defaults = json.loads(json.dumps(resolve_config(run.manifest.family).to_dict()))
    except KitError:  # a family this kit does not know: show nothing rather than everything
        return ""
    changed = []
    for part in ("model", "train"):
        for key, value in run.manifest.config.get(part, {}).items():
            if key not in ("epochs", "seed") and defaults.get(part, {}).get(key) != value:
                changed.append(f"{key}={_short(value)}")
    return ", ".join(changed) or "defaults"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------- keypoints


def keypoints_section(folder: WorkFolder) -> str:
    runs = folder.complete_runs
    stack = folder.stacks[0] if folder.stacks else None
    if not runs and stack is None:
        return none("no complete run or stack: nothing scored per keypoint")
    columns: list[tuple[str, dict[str, Any]]] = [(r.run_id, r.manifest.cv) for r in runs]
    if stack is not None:
        columns.append((stack.stack_id, stack.manifest.cv))
    rows = []
    for name in ["overall", *folder.keypoints]:
        values = [_score(cv, name) for _, cv in columns]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        low = min(finite, default=math.nan)
        cells = [f"<b>{esc(name)}</b>" if name == "overall" else esc(name)]
        cells += [number_cell(v, v is not None and v <= low) for v in values]
        if stack is not None:
            cells.append(esc("" if name == "overall" else stack.manifest.picks.get(name, "")))
        rows.append(cells)
    head = ["keypoint", *(c for c, _ in columns)]
    head += ["the stack picked"] if stack is not None else []
    caption = (
        f"<p class='muted'>CV {folder.metric.upper()} of every complete run"
        + (f" and of the best stack ({esc(stack.stack_id)})" if stack else "")
        + "; the best of each row in bold green.</p>"
    )
    return caption + table(head, rows, css="keys")


def _score(cv: dict[str, Any], name: str) -> float | None:
    value = cv.get("overall") if name == "overall" else cv.get("per_keypoint", {}).get(name)
    return None if value is None else float(value)


# ------------------------------------------------------------------------------- stack


def stack_section(folder: WorkFolder) -> str:
    if not folder.stacks:
        return none("no stack in this work folder (kit stack COMP makes one)")
    best = folder.stacks[0]
    parts = [f"<p>{esc(stack_headline(best))}</p>", _methods_table(best)]
    parts.append(f"<h3>Which meta-model was picked where ({esc(best.stack_id)})</h3>")
    parts.append(f"<p>{esc(picks_line(best))}</p>")
    parts.append(_picks_table(best))
    if len(folder.stacks) > 1:
        parts.append("<h3>Every stack</h3>")
        parts.append(_stacks_table(folder.stacks))
    return "\n".join(parts)


def stack_headline(stack: StackResult) -> str:
    m = stack.manifest
    single = m.methods.get(m.best_single, {}).get("overall")
    ratio = f" ({stack.cv_score / single:.3f} x the best single model {m.best_single}, "
    ratio += f"{num(single)})" if single else ""
    features = ", ".join(m.features) or "none"
    return (
        f"The best stack, {stack.stack_id}, of {len(m.runs)} runs: CV {m.metric.upper()} "
        f"{num(stack.cv_score)}{ratio if single else ''}; extra LightGBM features: {features}."
    )


def _methods_table(stack: StackResult) -> str:
    frame = stack.table
    low = float(frame["overall"].min())
    rows = [
        [
            f"<td><code>{esc(method)}</code></td>",
            esc(kind),
            number_cell(float(score), float(score) <= low),
        ]
        for method, kind, score in zip(
            frame["method"], frame["kind"], frame["overall"], strict=True
        )
    ]
    return table(["method", "kind", f"CV {stack.manifest.metric.upper()}"], rows)


def picks_line(stack: StackResult) -> str:
    counts = Counter(stack.manifest.picks.values())
    return "Picked per keypoint (nested CV): " + ", ".join(
        f"{method} for {n} keypoint{'s' * (n != 1)}" for method, n in counts.most_common()
    )


def _picks_table(stack: StackResult) -> str:
    m = stack.manifest
    runs = [r["run_id"] for r in m.runs]
    rows = []
    for name in m.keypoints:
        weights = ridge_weights(stack, name)
        folds = sorted(m.picks_per_fold, key=int)
        per_fold = ", ".join(_short_method(m.picks_per_fold[f].get(name, "")) for f in folds)
        cells = [esc(name), esc(m.picks.get(name, "")), esc(per_fold)]
        cells.append(number_cell(m.methods.get(PICKED, m.cv).get("per_keypoint", {}).get(name)))
        cells += [number_cell(weights.get(run), digits=2) for run in runs]
        cells.append(str(_fallbacks(m.fallbacks_to_blend, name) or ""))
        rows.append(cells)
    head = ["keypoint", "picked", "picked per fold", "CV", *(f"ridge weight {r}" for r in runs)]
    head.append("folds on the blend")
    return table(head, rows, css="keys") + (
        "<p class='muted'>ridge weight: each run's effective weight in the ridge meta-model, "
        "the mean over the folds and both coordinates; folds on the blend: fits with too few "
        "labelled rows, where the blend stood in.</p>"
    )


def ridge_weights(stack: StackResult, name: str) -> dict[str, float]:
    """Run id -> its mean ridge weight for keypoint `name` (over axes and folds)."""
    m = stack.manifest
    runs = [r["run_id"] for r in m.runs if name in r.get("keypoints", m.keypoints)]
    try:
        mean = np.asarray(m.ridge_weights.get(name, []), dtype=float).mean(axis=(0, 1))
    except (ValueError, np.exceptions.AxisError):  # ragged or empty: nothing to show
        return {}
    return dict(zip(runs, (float(w) for w in np.atleast_1d(mean)), strict=False))


def _short_method(method: str) -> str:
    return method.replace(" stack", "").replace("mean ", "")


def _fallbacks(fallbacks: Any, name: str) -> int:
    if isinstance(fallbacks, dict):
        return int(fallbacks.get(name, 0))
    return int(name in fallbacks)


def _stacks_table(stacks: Sequence[StackResult]) -> str:
    rows = [
        [
            f"<td><code>{esc(s.stack_id)}</code></td>",
            esc(", ".join(r["run_id"] for r in s.manifest.runs)),
            number_cell(s.cv_score, i == 0),
            esc(s.manifest.best_single),
            when(s.manifest.created),
        ]
        for i, s in enumerate(stacks)
    ]
    return table(["stack", "runs", "CV", "best single", "created"], rows)


# ------------------------------------------------------------------------------- pictures


def curves_section(folder: WorkFolder) -> str:
    runs = folder.complete_runs
    if not runs:
        return none("no complete run: no learning curves")
    parts = []
    for i, run in enumerate(runs):
        png = pictures.run_curves(run.path, folder.metric)
        body = image(png, f"learning curves of {run.run_id}") if png else none("no fold records")
        parts.append(_details(f"{run.run_id}: CV {num(run.cv_score)}", body, opened=i == 0))
    return "".join(parts)


def worst_section(folder: WorkFolder, faces: pictures.Faces | None) -> str:
    shown: list[tuple[str, Any]] = [(f"stack {s.stack_id}", s) for s in folder.stacks[:1]]
    shown += [(f"run {r.run_id}", r) for r in folder.complete_runs]
    if not shown:
        return none("no complete run or stack: no out-of-fold predictions to look at")
    parts = ["<p class='muted'>blue: the truth; red crosses: the out-of-fold prediction.</p>"]
    for i, (label, saved) in enumerate(shown):
        png = pictures.worst_faces(saved, faces)
        text = "no worst.png, and no cached training faces of its data to draw it from"
        body = image(png, f"worst out-of-fold faces of {label}") if png else none(text)
        parts.append(_details(f"{label}: CV {num(saved.cv_score)}", body, opened=i == 0))
    return "".join(parts)


def _details(summary: str, body: str, opened: bool) -> str:
    return f"<details{' open' if opened else ''}><summary>{esc(summary)}</summary>{body}</details>"


# ------------------------------------------------------------------------------- tuning


def tuning_section(tuning: TuningRecord | None, metric: str) -> str:
    if tuning is None:
        return none("no tuning studies in this work folder (kit tune COMP runs them)")
    parts = ["<ul>" + "".join(f"<li>{esc(_study_line(s))}</li>" for s in tuning.studies) + "</ul>"]
    parts.append(image(pictures.tuning_chart(tuning, metric), "tuning trials over time"))
    parts.append("<h3>Parameter importance</h3>")
    parts += [_importance(s) for s in tuning.studies]
    parts.append(f"<h3>Trials (the best {TRIALS_SHOWN} per family)</h3>")
    parts.append(_trials_table(tuning, metric))
    return "\n".join(parts)


def _study_line(study: StudyRecord) -> str:
    states = Counter(t.state.lower() for t in study.trials)
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    complete = study.complete
    best = min(complete, key=lambda t: t.value or math.inf) if complete else None
    found = f"; best fold-0 score {num(best.value)} (trial {best.number})" if best else ""
    return f"{study.family}: {len(study.trials)} trials ({counts}){found}"


def _importance(study: StudyRecord) -> str:
    if not study.importances:
        return f"<p><b>{esc(study.family)}</b>: {esc(study.importance_note)}</p>"
    rows = [
        [
            esc(param),
            f"<td><span class='bar' style='width:{200 * share:.0f}px'></span> {share:.2f}</td>",
        ]
        for param, share in study.importances.items()
    ]
    return f"<p><b>{esc(study.family)}</b> (Optuna's estimate)</p>" + table(
        ["parameter", "importance"], rows
    )


def _trials_table(tuning: TuningRecord, metric: str) -> str:
    frame = tuning.table
    if frame.empty:
        return none("no trials")
    shown = frame.groupby("family", sort=False).head(TRIALS_SHOWN)
    rows = [
        [
            esc(r.family),
            str(r.trial),
            esc(r.state),
            number_cell(_float(r.score)),
            number_cell(_float(r.cv)),
            seconds(_float(r.seconds)),
            esc(r.key_params),
            f"<td><code>{esc(_text(r.run_id))}</code></td>",
            esc(_text(r.error)),
        ]
        for r in shown.itertuples(index=False)
    ]
    head = ["family", "trial", "state", f"fold 0 {metric.upper()}", "CV (all folds)", "s"]
    head += ["settings", "run", "error"]
    left = len(frame) - len(shown)
    more = f"<p class='muted'>{left} more trial(s) not shown.</p>" if left else ""
    return table(head, rows, css="keys") + more


def _text(value: Any) -> str:
    """A table cell's text: nothing for None and pandas' NaN."""
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# ------------------------------------------------------------------------------- plan


def plan_section(plan: PlanRecord | None) -> str:
    if plan is None:
        return none("no kit run plan in this work folder (kit run COMP writes plan.json)")
    written = plan.written.strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<p>The last <code>kit run</code> ({esc(written)}): a budget of {plan.budget:.0f} s; "
        f"{plan.seconds_for_runs:.0f} s planned for {len(plan.rows)} runs on {plan.folds} "
        f"folds (estimated {plan.estimated_seconds:.0f} s) and {plan.stack_seconds:.0f} s for "
        f"the stack; {len(plan.trained)} trained, in {plan.actual_seconds:.0f} s.</p>"
    ]
    if plan.rows:
        parts.append(image(pictures.plan_chart(plan), "plan against what happened"))
        parts.append(_plan_table(plan))
    if plan.search:
        search = plan.search
        parts.append(
            f"<p>Search planned: {esc(search.get('trials'))} trials of "
            f"{esc(search.get('family'))} at {esc(search.get('epochs'))} epochs, "
            f"about {seconds(search.get('estimated_seconds'))} s.</p>"
        )
    if plan.skipped:
        skipped = "; ".join(f"{name} ({why})" for name, why in plan.skipped)
        parts.append(f"<p class='muted'>not planned: {esc(skipped)}</p>")
    return "\n".join(parts)


def _plan_table(plan: PlanRecord) -> str:
    rows = [
        [
            esc(r.name),
            str(r.epochs),
            str(r.seed),
            f'<td class="num">{seconds(r.estimated_seconds)}</td>',
            f'<td class="num">{seconds(r.actual_seconds)}</td>',
            number_cell(r.cv),
            f"<td><code>{esc(r.run_id or '-')}</code></td>",
            esc(r.config),
            esc(r.note),
        ]
        for r in plan.rows
    ]
    head = ["model", "epochs", "seed", "est. s", "actual s", "CV", "run", "config", "note"]
    return table(head, rows)


# ------------------------------------------------------------------------------- submissions


def submissions_section(folder: WorkFolder) -> str:
    subs = folder.submissions
    if not subs:
        return none("no submission kept for this competition (kit submit COMP writes one)")
    low = min(s.cv for s in subs)
    rows = [
        [
            when(s.created),
            f"<td><code>{esc(s.file)}</code></td>",
            esc(s.source),
            number_cell(s.cv, s.cv <= low),
            number_cell(s.public, digits=5),
            number_cell(s.private, digits=5),
            esc(_upload(s)),
        ]
        for s in subs
    ]
    head = ["created", "file", "from", f"CV {folder.metric.upper()}", "public", "private"]
    parts = [table([*head, "upload"], rows)]
    if not folder.tracked:
        parts.append(
            none(
                f"public scores: not tracked (kit track {folder.competition} records them "
                "from Kaggle)"
            )
        )
    chart = pictures.cv_public_chart(subs, folder.metric)
    if chart is not None:
        parts.append(image(chart, "CV against public score"))
    return "\n".join(parts)


def _upload(sub: SubmissionRecord) -> str:
    if sub.upload_error:
        return f"failed: {sub.upload_error}"
    if sub.kaggle_ref is None:
        return "dry run" if sub.dry_run else "not uploaded"
    return f"ref {sub.kaggle_ref}" + (f", {sub.status.lower()}" if sub.status else "")
