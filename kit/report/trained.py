"""The report's sections on what was trained: the runs, the CV per keypoint, and the stack
(its methods, the meta-model picked per keypoint and fold, the runs' ridge weights)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from kit.errors import KitError
from kit.report.html import esc, none, num, number_cell, seconds, table, when
from kit.report.records import WorkFolder, is_complete
from kit.stack import PICKED, StackResult
from kit.store import RunResult


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
    title = f"Which candidate (best single model or meta-model) was picked where ({best.stack_id})"
    parts.append(f"<h3>{esc(title)}</h3>")
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
