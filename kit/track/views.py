"""What the tracking history says: who "you" are, your standing, the top of the board, and your
submissions joined with their local CV scores. `kit track show` renders it with rich; the HTML
report and the notifications read the same objects.

Who "you" are (first match wins, checked against the board of each snapshot):
  1. ``--team NAME_OR_ID``: a team name (case-insensitive) or a numeric Kaggle team id;
  2. the ``team_name`` of your newest submission, when the Kaggle client reports one;
  3. ``$KAGGLE_USERNAME`` among a team's member user names (the leaderboard download lists them),
     or equal to a team name.
The match is made by team id, so a renamed team keeps its history.

Local CV scores come from the submit stage's JSON manifests, ``submissions/<competition>/*.json``.
Fields read (anything else is ignored):
  - the Kaggle submission ref: ``kaggle_ref``, else ``ref``, else ``submission_ref``;
  - the CV score: ``cv_score``, else ``cv`` (a number, or an object with ``score``);
  - the submitted CSV: ``file``, else ``csv``, else ``path`` (its base name is matched against
    the submission's file name on Kaggle when no ref matches).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from kit.errors import DataError, KitError
from kit.store.manifests import SubmissionManifest
from kit.track.store import TrackStore

# Used only when the board cannot tell (fewer than two distinct scores); other metrics: lower.
HIGHER_IS_BETTER = frozenset({"auc", "accuracy", "f1", "map", "dice", "iou", "r2", "kappa"})


@dataclass(frozen=True)
class Standing:
    """Your position in one snapshot. Scores are floats; None where there is none."""

    snapshot_id: int
    taken_at: datetime
    team_id: int | None
    team_name: str
    rank: int | None
    n_teams: int
    board_score: float | None  # your score on the leaderboard
    best_public: float | None  # the best public score among your submissions

    @property
    def best(self) -> float | None:
        """Your best public score: from your submissions, else from the board."""
        return self.best_public if self.best_public is not None else self.board_score


@dataclass
class Overview:
    """Everything `kit track show` prints and the report lays out."""

    competition: str
    higher_is_better: bool
    now: Standing
    before: Standing | None
    last_poll: datetime | None
    n_snapshots: int
    top: pd.DataFrame
    submissions: pd.DataFrame  # with cv_score and manifest columns
    warnings: list[str] = field(default_factory=list)


# -------------------------------------------------------------------------------------------
# Who "you" are and which way scores go


def resolve_team(
    board: pd.DataFrame,
    submissions: pd.DataFrame,
    team: str | None = None,
    username: str | None = None,
) -> int | None:
    """Your team id on `board` (see the module docstring for the order); None if not found."""
    if board.empty:
        return None
    names = board["team_name"].str.casefold()
    if team:
        wanted = team.strip()
        hit = board[(names == wanted.casefold()) | (board["team_id"].astype(str) == wanted)]
        return int(hit["team_id"].iloc[0]) if len(hit) else None
    reported = [n for n in submissions.get("team_name", pd.Series(dtype=str)) if n]
    if reported:
        hit = board[names == reported[0].casefold()]
        if len(hit):
            return int(hit["team_id"].iloc[0])
    user = (username if username is not None else os.environ.get("KAGGLE_USERNAME", "")).strip()
    if user:
        members = board["members"].fillna("").map(_member_names)
        hit = board[members.map(lambda m: user.casefold() in m) | (names == user.casefold())]
        if len(hit):
            return int(hit["team_id"].iloc[0])
    return None


def _member_names(text: str) -> set[str]:
    return {m.strip().casefold() for m in text.replace(";", ",").split(",") if m.strip()}


def higher_is_better(metric: str, board: pd.DataFrame | None = None) -> bool:
    """Which way scores improve: read from the board's order when it shows, else the metric."""
    if board is not None and not board.empty:
        scores = board.sort_values("rank")["score_value"].dropna()
        if len(scores) >= 2 and scores.iloc[0] != scores.iloc[-1]:
            return bool(scores.iloc[0] > scores.iloc[-1])
    return metric.lower() in HIGHER_IS_BETTER


def better(a: float | None, b: float | None, higher: bool) -> bool:
    """Whether score `a` beats `b` (a missing `b` is beaten by any score)."""
    if a is None:
        return False
    if b is None:
        return True
    return a > b if higher else a < b


def best_of(values: pd.Series, higher: bool) -> float | None:
    values = values.dropna()
    if values.empty:
        return None
    return float(values.max() if higher else values.min())


# -------------------------------------------------------------------------------------------
# Standing


def standing(
    store: TrackStore,
    snapshot_id: int,
    metric: str,
    team: str | None = None,
    username: str | None = None,
    team_id: int | None = None,
) -> Standing:
    """Your standing in one snapshot; `team_id` (when known) overrides the name look-up."""
    board = store.leaderboard(snapshot_id)
    subs = store.submissions(snapshot_id)
    if team_id is None:
        team_id = resolve_team(board, subs, team, username)
    higher = higher_is_better(metric, board)
    mine = board[board["team_id"] == team_id] if team_id is not None else board.iloc[:0]
    row = mine.iloc[0] if len(mine) else None
    complete = subs[subs["status"] == "COMPLETE"]
    return Standing(
        snapshot_id=snapshot_id,
        taken_at=store.taken_at(snapshot_id),
        team_id=team_id,
        team_name=str(row["team_name"]) if row is not None else (team or ""),
        rank=int(row["rank"]) if row is not None else None,
        n_teams=len(board),
        board_score=_float(row["score_value"]) if row is not None else None,
        best_public=best_of(complete["public_value"], higher),
    )


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# -------------------------------------------------------------------------------------------
# Manifests (local CV scores)


def read_manifests(folder: Path) -> tuple[pd.DataFrame, list[str]]:
    """ref, file, cv_score, manifest of every submission manifest in `folder`, plus one warning
    per file that could not be read (a broken manifest must not hide the tracking view)."""
    rows, warnings = [], []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            manifest = SubmissionManifest.load(path)
        except DataError as exc:
            reason = str(exc).removeprefix(f"{path}: ")
            warnings.append(f"{path}: unreadable submission manifest ({reason}); skipped")
            continue
        rows.append(
            {
                "ref": manifest.kaggle_ref,
                "file": Path(manifest.file).name,
                "cv_score": manifest.cv_score,
                "manifest": path.name,
            }
        )
    return pd.DataFrame(rows, columns=["ref", "file", "cv_score", "manifest"]), warnings


def join_cv(submissions: pd.DataFrame, manifests: pd.DataFrame) -> pd.DataFrame:
    """`submissions` with cv_score and manifest columns: matched by ref, else by file name."""
    out = submissions.copy()
    by_ref = {int(r): m for r, m in zip(manifests["ref"], manifests.index, strict=True) if r == r}
    by_file = {f: m for f, m in zip(manifests["file"], manifests.index, strict=True) if f}
    cv, names = [], []
    for ref, file_name in zip(out["ref"], out["file_name"], strict=True):
        idx = by_ref.get(int(ref), by_file.get(Path(file_name).name))
        cv.append(manifests.at[idx, "cv_score"] if idx is not None else None)
        names.append(manifests.at[idx, "manifest"] if idx is not None else "")
    out["cv_score"] = pd.Series(cv, index=out.index, dtype=float)
    out["manifest"] = names
    return out


# -------------------------------------------------------------------------------------------
# The overview


def overview(
    store: TrackStore,
    competition: str,
    metric: str,
    manifests_dir: Path,
    team: str | None = None,
    username: str | None = None,
    top: int = 10,
) -> Overview:
    """Your standing now and at the snapshot before, the top `top`, your submissions with CV."""
    latest, previous = store.latest_ids()
    if latest is None:
        raise KitError(
            f"no snapshots of {competition} yet", hint=f"run: kit track snap {competition}"
        )
    now = standing(store, latest, metric, team, username)
    before = None
    if previous is not None:
        before = standing(store, previous, metric, team, username, team_id=now.team_id)
    board = store.leaderboard(latest)
    manifests, warnings = read_manifests(manifests_dir)
    return Overview(
        competition=competition,
        higher_is_better=higher_is_better(metric, board),
        now=now,
        before=before,
        last_poll=store.last_poll(),
        n_snapshots=len(store.snapshots()),
        top=board.head(top),
        submissions=join_cv(store.submissions(latest), manifests),
        warnings=warnings,
    )


def fmt_score(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.5g}"


def fmt_delta(now: float | None, before: float | None) -> str:
    if now is None or before is None or now == before:
        return ""
    return f"{now - before:+.5g}"


def rank_change(now: Standing, before: Standing | None) -> str:
    """ "▲ 3" (rank improved by 3), "▼ 1", "=" or "" when either rank is unknown."""
    if before is None or now.rank is None or before.rank is None:
        return ""
    moved = before.rank - now.rank
    return "=" if moved == 0 else (f"▲ {moved}" if moved > 0 else f"▼ {-moved}")


def summary_lines(ov: Overview) -> list[str]:
    """The headline, as plain short lines: the board, who you are, your rank and best score,
    each with its change since the snapshot before."""
    now, before = ov.now, ov.before
    since = f" since {before.taken_at:%m-%d %H:%M}" if before else ""
    checked = f", last checked {ov.last_poll:%Y-%m-%d %H:%M} UTC" if ov.last_poll else ""
    lines = [f"{ov.competition}: {now.n_teams} teams, {ov.n_snapshots} snapshot(s){checked}"]
    if now.team_id is None:
        lines.append(
            "you: not found on the board (pass --team NAME, or set KAGGLE_USERNAME)"
            if now.n_teams
            else "you: the leaderboard is empty"
        )
    else:
        moved = rank_change(now, before)
        change = f" ({moved}{since})" if moved else ""
        lines.append(f"you: {now.team_name}, rank {now.rank} of {now.n_teams}{change}")
    delta = fmt_delta(now.best, before.best if before else None)
    direction = "higher" if ov.higher_is_better else "lower"
    change = f" ({delta}{since})" if delta else ""
    lines.append(f"best public score: {fmt_score(now.best)}{change}; {direction} is better")
    return lines
