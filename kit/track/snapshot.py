"""One snapshot: the whole public leaderboard and all your submissions, through kit.kaggle, stored
in the competition's track database, with the changes since the snapshot before.

Leaderboard sources:
  - ``download`` (default): DownloadLeaderboard, one zip with the whole public board as a UTF-8 CSV
    with a BOM (``Rank,TeamId,TeamName,LastSubmissionDate,Score,SubmissionCount,
    TeamMemberUserNames``). One request, a consistent board, member user names included.
  - ``api``: GetLeaderboard, every page. Rank is the position; a team seen twice (the board moved
    between pages) keeps its first, better row. Kaggle may serve the private board here once the
    competition has one.
Both are fetched before the database is touched, so a failed call records nothing.
"""

from __future__ import annotations

import csv
import io
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kit import kaggle
from kit.competition import Competition
from kit.errors import DataError, KitError
from kit.progress import Event, OnEvent, ignore
from kit.track import leaderboard_slug
from kit.track.notify import Change, announce, detect_changes
from kit.track.store import Recorded, TrackStore
from kit.track.views import Standing, fmt_score, higher_is_better, standing

SOURCES = ("download", "api")
CSV_COLUMNS = {
    "Rank": "rank",
    "TeamId": "team_id",
    "TeamName": "team_name",
    "LastSubmissionDate": "submission_date",
    "Score": "score",
    "SubmissionCount": "submission_count",
    "TeamMemberUserNames": "members",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SnapshotResult:
    recorded: Recorded
    standing: Standing
    n_submissions: int
    changes: list[Change] = field(default_factory=list)

    def line(self) -> str:
        """One terminal line about this poll."""
        s = self.standing
        state = "new snapshot" if self.recorded.is_new else "no change"
        you = f"you: rank {s.rank}, best {fmt_score(s.best)}" if s.rank else "you: not on the board"
        return (
            f"{s.taken_at:%Y-%m-%d %H:%M:%S} UTC  {state} #{self.recorded.snapshot_id}: "
            f"{s.n_teams} teams, {self.n_submissions} submissions; {you}"
        )


def fetch_leaderboard(slug: str, source: str = "download") -> list[dict[str, Any]]:
    """The whole public leaderboard as rows of rank, team_id, team_name, submission_date, score,
    submission_count, members."""
    if source == "api":
        return _ranked(kaggle.leaderboard(slug))
    if source != "download":
        raise KitError(
            f"unknown leaderboard source {source!r}", hint=f"one of {', '.join(SOURCES)}"
        )
    with tempfile.TemporaryDirectory(prefix="kit-leaderboard-") as tmp:
        return read_leaderboard_zip(kaggle.download_leaderboard(slug, Path(tmp)))


def _ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[int] = set()
    ranked = []
    for row in rows:
        if int(row["team_id"]) in seen:
            continue
        seen.add(int(row["team_id"]))
        ranked.append({**row, "rank": len(ranked) + 1, "submission_count": None, "members": ""})
    return ranked


def read_leaderboard_zip(path: Path) -> list[dict[str, Any]]:
    """Rows of the leaderboard CSV inside Kaggle's leaderboard zip."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n.lower().endswith(".csv")]
            if len(members) != 1:
                raise DataError(
                    f"Kaggle's leaderboard zip holds {len(members)} CSV files, expected 1",
                    path=path,
                )
            text = archive.read(members[0]).decode("utf-8-sig")
    except (zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable leaderboard download ({exc})", path=path) from exc
    return parse_leaderboard_csv(text, name=members[0])


def parse_leaderboard_csv(text: str, name: str = "leaderboard.csv") -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise DataError(
            f"leaderboard CSV lacks column(s) {', '.join(missing)}",
            path=name,
            hint=f"expected {','.join(CSV_COLUMNS)}",
        )
    rows = []
    for line, raw in enumerate(reader, start=2):
        row = {key: (raw[column] or "").strip() for column, key in CSV_COLUMNS.items()}
        if not row["rank"].isdigit() or not row["team_id"].lstrip("-").isdigit():
            raise DataError(f"line {line}: bad Rank {row['rank']!r} or TeamId", path=name)
        rows.append(row)
    return rows


def take_snapshot(
    comp: Competition,
    *,
    source: str = "download",
    team: str | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> SnapshotResult:
    """Fetch the board and your submissions, store them, and work out what changed."""
    slug = leaderboard_slug(comp)
    board = fetch_leaderboard(slug, source)
    submissions = kaggle.list_submissions(slug)
    with TrackStore.for_workspace(comp.workspace.root) as store:
        recorded = store.record(clock(), board, submissions, source)
        now = standing(store, recorded.snapshot_id, comp.metric, team)
        changes: list[Change] = []
        if recorded.is_new and recorded.previous_id is not None:
            before = standing(store, recorded.previous_id, comp.metric, team, team_id=now.team_id)
            changes = detect_changes(
                before,
                now,
                store.submissions(recorded.previous_id),
                store.submissions(recorded.snapshot_id),
                higher_is_better(comp.metric, store.leaderboard(recorded.snapshot_id)),
            )
    return SnapshotResult(recorded, now, len(submissions), changes)


def poll(
    comp: Competition,
    *,
    source: str = "download",
    team: str | None = None,
    webhook: str | None = None,
    clock: Callable[[], datetime] = utc_now,
    on_event: OnEvent = ignore,
) -> SnapshotResult:
    """`take_snapshot`, then say the result and announce the changes (terminal, webhook)."""
    result = take_snapshot(comp, source=source, team=team, clock=clock)
    on_event(Event("track", "snapshot", text=result.line(), detail=result))
    announce(comp.name, result.standing.taken_at, result.changes, webhook, on_event=on_event)
    return result
