"""The report's sections on how it went: learning curves, the worst out-of-fold faces, the
tuning history, the last `kit run`'s plan against what happened, and the submissions."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from kit.report import pictures
from kit.report.html import details, esc, image, none, num, number_cell, seconds, table, when
from kit.report.records import (
    PlanRecord,
    StudyRecord,
    SubmissionRecord,
    TuningRecord,
    WorkFolder,
    finite_number,
)
from kit.store.predictions import SavedPredictions

TRIALS_SHOWN = 10  # per family, best first


def curves_section(folder: WorkFolder) -> str:
    runs = folder.complete_runs
    if not runs:
        return none("no complete run: no learning curves")
    parts = []
    for i, run in enumerate(runs):
        png = pictures.run_curves(run.path, folder.metric)
        body = image(png, f"learning curves of {run.run_id}") if png else none("no fold records")
        parts.append(details(f"{run.run_id}: CV {num(run.cv_score)}", body, opened=i == 0))
    return "".join(parts)


def worst_section(folder: WorkFolder, faces: pictures.Faces | None) -> str:
    shown: list[tuple[str, SavedPredictions]] = [
        *((f"stack {s.stack_id}", s) for s in folder.stacks[:1]),
        *((f"run {r.run_id}", r) for r in folder.complete_runs),
    ]
    if not shown:
        return none("no complete run or stack: no out-of-fold predictions to look at")
    parts = ["<p class='muted'>blue: the truth; red crosses: the out-of-fold prediction.</p>"]
    for i, (label, saved) in enumerate(shown):
        png = pictures.worst_faces(saved, faces)
        text = "no worst.png, and no cached training faces of its data to draw it from"
        body = image(png, f"worst out-of-fold faces of {label}") if png else none(text)
        parts.append(details(f"{label}: CV {num(saved.cv_score)}", body, opened=i == 0))
    return "".join(parts)


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
            number_cell(finite_number(r.score)),
            number_cell(finite_number(r.cv)),
            seconds(finite_number(r.seconds)),
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
    if not folder.on_kaggle:
        parts.append(none(f"public scores: none ({folder.competition} has no Kaggle page)"))
    elif not folder.tracked:
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
    if sub.upload_skipped:
        return "not uploaded: no Kaggle page"
    if sub.kaggle_ref is None:
        return "dry run" if sub.dry_run else "not uploaded"
    return f"ref {sub.kaggle_ref}" + (f", {sub.status.lower()}" if sub.status else "")
