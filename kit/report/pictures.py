"""The report's pictures as PNG bytes: a run's own curves.png and worst.png when it has them,
else drawn the same way (kit.training.plots) from its fold records and OOF; and the report's
charts (the plan against what happened, the trials over time, CV against public score)."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kit.data.arrays import KeypointData
from kit.metrics import per_row_error
from kit.report.records import PlanRecord, SubmissionRecord, TuningRecord
from kit.store import RunFolder
from kit.store.files import read_json, sha256_file
from kit.store.predictions import SavedPredictions
from kit.training.plots import plot_curves, plot_worst

DPI = 100


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _drawn(draw, name: str) -> bytes:
    """What a kit.training.plots function (which writes files) draws, as bytes."""
    with tempfile.TemporaryDirectory(prefix="kit-report-") as folder:
        path = Path(folder) / name
        draw(path)
        return path.read_bytes()


def run_curves(path: Path, metric: str) -> bytes | None:
    """A run folder's learning curves: its curves.png, else drawn from its fold records;
    None when it has neither."""
    folder = RunFolder(path)
    if folder.curves.is_file():
        return folder.curves.read_bytes()
    records = [read_json(folder.marker(fold)) for fold in folder.done_folds()]
    if not records or not all("submodels" in r for r in records):
        return None
    return _drawn(lambda out: plot_curves(records, out, metric=metric), "curves.png")


@dataclass(frozen=True)
class Faces:
    """The cached training faces, read only when a picture must be drawn; a run or stack is
    drawn only on the data it was trained on (its manifest's checksum)."""

    path: Path

    @cached_property
    def sha256(self) -> str:
        return sha256_file(self.path) if self.path.is_file() else ""

    @cached_property
    def data(self) -> KeypointData:
        return KeypointData.load(self.path)


def worst_faces(saved: SavedPredictions, faces: Faces | None) -> bytes | None:
    """The worst OOF faces of a run or stack: its worst.png, else drawn from its OOF and the
    cached training faces it was trained on; None when neither is there."""
    if (saved.path / "worst.png").is_file():
        return (saved.path / "worst.png").read_bytes()
    if faces is None or not faces.sha256 or saved.manifest.data.get("train") != faces.sha256:
        return None
    data = faces.data
    oof = saved.oof
    truth = data.keypoints[:, saved.keypoints]
    if oof.shape[1] != len(saved.keypoints):  # a stack's OOF spans every keypoint
        oof = oof[:, saved.keypoints]
    predicted = np.isfinite(oof).all(axis=(1, 2))
    errors = np.full(len(oof), np.nan)
    errors[predicted] = per_row_error(oof[predicted], truth[predicted])
    return _drawn(lambda out: plot_worst(data.images, truth, oof, errors, out), "worst.png")


def plan_chart(plan: PlanRecord) -> bytes:
    """Estimated against actual seconds per planned run (a run not trained has no bar)."""
    rows = list(plan.rows)
    fig = _figure(10, 0.9 + 0.45 * max(1, len(rows)))
    ax = fig.add_subplot()
    y = np.arange(len(rows))
    ax.barh(y - 0.2, [r.estimated_seconds for r in rows], 0.4, label="estimated", color="#9db4e0")
    actual = [r.actual_seconds or 0.0 for r in rows]
    ax.barh(y + 0.2, actual, 0.4, label="actual", color="#3b6fd6")
    ax.set_yticks(y, [r.name for r in rows])
    ax.invert_yaxis()
    ax.set_xlabel("seconds")
    ax.set_title(
        f"plan against what happened: {plan.estimated_seconds:.0f} s estimated, "
        f"{plan.actual_seconds:.0f} s taken, of a {plan.budget:.0f} s budget",
        fontsize=10,
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def tuning_chart(tuning: TuningRecord, metric: str) -> bytes:
    """Each family's complete trials by the time they finished, with the best so far."""
    fig = _figure(10, 4)
    ax = fig.add_subplot()
    plotted = False
    for i, study in enumerate(tuning.studies):
        points = sorted((t for t in study.complete if t.finished), key=lambda t: t.finished)
        if not points:
            continue
        when = [t.finished for t in points]
        values = [float(t.value) for t in points if t.value is not None]
        colour = f"C{i}"
        ax.scatter(when, values, s=18, color=colour, alpha=0.6, label=f"{study.family} trials")
        ax.step(
            when,
            np.minimum.accumulate(values),
            where="post",
            color=colour,
            label=f"{study.family} best so far",
        )
        plotted = True
    if not plotted:
        ax.text(0.5, 0.5, "no complete trial", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.set_xlabel("finished")
    ax.set_ylabel(f"fold-0 {metric.upper()}")
    ax.set_title("tuning trials over time (lower is better)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig)


def cv_public_chart(subs: Sequence[SubmissionRecord], metric: str) -> bytes | None:
    """Each scored submission's local CV against its public score; None without any."""
    pairs = [(s.cv, s.public, s.file) for s in subs if s.public is not None]
    if not pairs:
        return None
    fig = _figure(6, 4.5)
    ax = fig.add_subplot()
    cv, public = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    ax.scatter(cv, public, s=30, color="#3b6fd6")
    low, high = float(min(cv.min(), public.min())), float(max(cv.max(), public.max()))
    pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    ax.plot([low - pad, high + pad], [low - pad, high + pad], ls=":", color="0.5")
    ax.set_xlabel(f"local CV {metric.upper()}")
    ax.set_ylabel("public score")
    ax.set_title(f"{len(pairs)} submission(s): CV against public score", fontsize=10)
    ax.grid(alpha=0.3)
    return _png(fig)
