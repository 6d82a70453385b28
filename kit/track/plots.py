"""PNG charts of the tracking history (matplotlib's Agg canvas; no pyplot, no display needed).

- ``scores.png``: leaderboard score over time, you against the current top k;
- ``rank.png``: your rank over time, with the number of teams on the board;
- ``cv_vs_public.png``: each scored submission's local CV score against its public score, with
  the y = x line and the correlations: how well local CV predicts the leaderboard.

Each function returns a :class:`Chart` whose ``series`` is read back from the drawn figure (the
lines' and points' data), so callers and tests see exactly what was plotted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from kit.track.store import TrackStore
from kit.track.views import Overview
from kit.workspace import atomic_path

SIZE_INCHES = (10.0, 5.0)
DPI = 100
YOU = "you"


@dataclass
class Chart:
    path: Path
    title: str
    series: dict[str, tuple[list[Any], list[float]]] = field(default_factory=dict)


def _figure(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def _time_axis(ax: Axes) -> None:
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_xlabel("time (UTC)")


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _save(fig: Figure, path: Path, title: str) -> Chart:
    ax = fig.axes[0]
    series: dict[str, tuple[list[Any], list[float]]] = {
        str(line.get_label()): (list(line.get_xdata()), [float(v) for v in line.get_ydata()])
        for line in ax.get_lines()
        if not str(line.get_label()).startswith("_")
    }
    for points in ax.collections:
        offsets = np.asarray(points.get_offsets(), dtype=float)
        series[str(points.get_label())] = (offsets[:, 0].tolist(), offsets[:, 1].tolist())
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Chart(path, title, series)


def _times(frame: pd.DataFrame) -> list[datetime]:
    return [t.to_pydatetime().replace(tzinfo=None) for t in frame["taken_at"]]


def score_chart(store: TrackStore, ov: Overview, path: Path, top_k: int = 5) -> Chart:
    """Leaderboard score over time: you (bold) against the teams now in the top `top_k`."""
    title = f"{ov.competition}: public leaderboard score over time"
    fig, ax = _figure(title)
    leaders = [int(t) for t in ov.top["team_id"].head(top_k)]
    mine = ov.now.team_id
    history = store.history([*leaders, *([mine] if mine is not None else [])])
    for team_id in leaders:
        if team_id == mine:
            continue
        rows = history[history["team_id"] == team_id].dropna(subset=["score_value"])
        name = str(rows["team_name"].iloc[-1]) if len(rows) else str(team_id)
        ax.plot(
            _times(rows),
            rows["score_value"],
            drawstyle="steps-post",
            marker=".",
            linewidth=1.2,
            alpha=0.8,
            label=name,
        )
    if mine is not None:
        rows = history[history["team_id"] == mine].dropna(subset=["score_value"])
        ax.plot(
            _times(rows),
            rows["score_value"],
            drawstyle="steps-post",
            marker="o",
            linewidth=2.5,
            color="black",
            label=YOU,
        )
    if history.empty:
        _no_data(ax, "no scores on the board yet")
    else:
        ax.legend(loc="best", fontsize="small")
        _time_axis(ax)
    if not ov.higher_is_better:
        ax.invert_yaxis()  # better is up
    ax.set_ylabel(f"score ({'higher' if ov.higher_is_better else 'lower'} is better)")
    return _save(fig, path, title)


def rank_chart(store: TrackStore, ov: Overview, path: Path) -> Chart:
    """Your rank over time, 1 at the top; the latest point says of how many teams."""
    title = f"{ov.competition}: your rank over time"
    fig, ax = _figure(title)
    rows = store.history([ov.now.team_id]) if ov.now.team_id is not None else None
    if rows is None or rows.empty:
        _no_data(ax, "you are not on the board (pass --team, or set KAGGLE_USERNAME)")
    else:
        times = _times(rows)
        ranks = rows["rank"].astype(float)
        ax.plot(
            times,
            ranks,
            drawstyle="steps-post",
            marker="o",
            linewidth=2.5,
            color="black",
            label=YOU,
        )
        ax.annotate(
            f"{int(ranks.iloc[-1])} of {ov.now.n_teams}",
            (times[-1], ranks.iloc[-1]),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize="small",
        )
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(ranks.max() + 1, max(0.5, ranks.min() - 1))  # rank 1 at the top
        _time_axis(ax)
    ax.set_ylabel("rank")
    return _save(fig, path, title)


def cv_chart(ov: Overview, path: Path) -> Chart:
    """Local CV score against public score, one point per scored submission with a manifest."""
    title = f"{ov.competition}: local CV against public leaderboard score"
    fig, ax = _figure(title)
    subs = ov.submissions.dropna(subset=["cv_score", "public_value"])
    if subs.empty:
        _no_data(ax, "no submission has both a local CV score and a public score yet")
    else:
        cv, public = subs["cv_score"].to_numpy(float), subs["public_value"].to_numpy(float)
        ax.scatter(cv, public, s=40, color="tab:blue", label="submissions")
        for x, y, ref in zip(cv, public, subs["ref"], strict=True):
            ax.annotate(
                str(ref),
                (x, y),
                textcoords="offset points",
                xytext=(4, 4),
                fontsize="x-small",
                color="0.3",
            )
        low, high = float(min(cv.min(), public.min())), float(max(cv.max(), public.max()))
        pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
        ax.plot(
            [low - pad, high + pad],
            [low - pad, high + pad],
            linestyle=":",
            color="0.5",
            label="_y=x",
        )
        ax.set_title(f"{title}\n{_correlation_text(subs)}")
    ax.set_xlabel("local CV score")
    ax.set_ylabel("public score")
    return _save(fig, path, title)


def _correlation_text(subs: pd.DataFrame) -> str:
    n = len(subs)
    if n < 3:
        return f"{n} submission(s): too few for a correlation"
    pearson = subs["cv_score"].corr(subs["public_value"])
    spearman = subs["cv_score"].corr(subs["public_value"], method="spearman")
    gap = (subs["public_value"] - subs["cv_score"]).mean()
    return f"n={n}, Pearson r={pearson:.3f}, Spearman ρ={spearman:.3f}, mean public−CV {gap:+.4g}"


def write_charts(store: TrackStore, ov: Overview, out_dir: Path, top_k: int = 5) -> list[Chart]:
    """All three charts into `out_dir`."""
    return [
        score_chart(store, ov, out_dir / "scores.png", top_k),
        rank_chart(store, ov, out_dir / "rank.png"),
        cv_chart(ov, out_dir / "cv_vs_public.png"),
    ]
