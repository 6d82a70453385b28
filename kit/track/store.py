"""The tracking history: an append-only SQLite database (WAL) in the competition's work folder.

Layout (``work/<competition>/track.sqlite3``)::

    boards(sha, n_teams)                 one row per distinct leaderboard (content hash)
    board_rows(board_sha, rank, team_id, team_name, submission_date, score, score_value,
               submission_count, members)
    submission_sets(sha, n_submissions)  one row per distinct list of your submissions
    submission_rows(set_sha, ref, date, description, file_name, status, public_score,
                    private_score, error_description, team_name)
    snapshots(id, taken_at, source, board_sha, submissions_sha)
                                         a new row only when the board or the submissions changed
    polls(id, taken_at, snapshot_id)     every successful check, so "last checked" is known

Taking the same data twice adds a poll and nothing else: boards and submission lists are stored
once per content hash, and a snapshot row is added only when its (board, submissions) pair differs
from the latest one. Triggers refuse UPDATE and DELETE, so history is never rewritten.
Scores are kept as Kaggle's strings ("" when absent); `score_value` is the parsed number.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from kit.errors import DataError, KitError
from kit.store.files import sha256_json

DB_NAME = "track.sqlite3"
SCHEMA_VERSION = "1"
BOARD_COLUMNS = (
    "rank",
    "team_id",
    "team_name",
    "submission_date",
    "score",
    "submission_count",
    "members",
)
SUBMISSION_COLUMNS = (
    "ref",
    "date",
    "description",
    "file_name",
    "status",
    "public_score",
    "private_score",
    "error_description",
    "team_name",
)
TABLES = ("boards", "board_rows", "submission_sets", "submission_rows", "snapshots", "polls")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS boards (sha TEXT PRIMARY KEY, n_teams INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS board_rows (
    board_sha TEXT NOT NULL REFERENCES boards(sha),
    rank INTEGER NOT NULL,
    team_id INTEGER NOT NULL,
    team_name TEXT NOT NULL,
    submission_date TEXT NOT NULL,
    score TEXT NOT NULL,
    score_value REAL,
    submission_count INTEGER,
    members TEXT NOT NULL,
    PRIMARY KEY (board_sha, team_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS submission_sets (sha TEXT PRIMARY KEY, n_submissions INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS submission_rows (
    set_sha TEXT NOT NULL REFERENCES submission_sets(sha),
    ref INTEGER NOT NULL,
    date TEXT NOT NULL,
    description TEXT NOT NULL,
    file_name TEXT NOT NULL,
    status TEXT NOT NULL,
    public_score TEXT NOT NULL,
    private_score TEXT NOT NULL,
    error_description TEXT NOT NULL,
    team_name TEXT NOT NULL,
    PRIMARY KEY (set_sha, ref)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY,
    taken_at TEXT NOT NULL,
    source TEXT NOT NULL,
    board_sha TEXT NOT NULL REFERENCES boards(sha),
    submissions_sha TEXT NOT NULL REFERENCES submission_sets(sha)
);
CREATE TABLE IF NOT EXISTS polls (
    id INTEGER PRIMARY KEY,
    taken_at TEXT NOT NULL,
    snapshot_id INTEGER NOT NULL REFERENCES snapshots(id)
);
"""


def _append_only_triggers() -> str:
    return "\n".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb} BEFORE {verb.upper()} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'track history is append-only'); END;"
        for table in TABLES
        for verb in ("update", "delete")
    )


def parse_score(text: Any) -> float | None:
    """Kaggle's score string as a number; None when blank or not a number."""
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return value if value == value else None  # NaN is "no score"


def iso_utc(when: datetime) -> str:
    """A timestamp as stored: UTC, ISO 8601, seconds, trailing Z."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Recorded:
    """What `TrackStore.record` did: the snapshot now current, and whether it is new."""

    snapshot_id: int
    is_new: bool
    previous_id: int | None  # the snapshot before this one (None for the first)
    poll_id: int


class TrackStore:
    """The tracking database of one competition. Use as a context manager, or call `close`."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.conn = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.executescript(SCHEMA + _append_only_triggers())
            self._check_version()
        except sqlite3.DatabaseError as exc:
            raise DataError(
                f"not a usable kit track database ({exc})",
                path=path,
                hint="move it aside and take a new snapshot",
            ) from exc

    @classmethod
    def for_workspace(cls, root: Path) -> TrackStore:
        return cls(root / DB_NAME)

    @classmethod
    def existing(cls, root: Path, competition: str) -> TrackStore:
        """The store of a workspace that has been tracked; a clear error if it never was."""
        path = root / DB_NAME
        if not path.is_file():
            raise KitError(
                f"{competition} has not been tracked yet (no {path})",
                hint=f"run: kit track snap {competition}",
            )
        return cls(path)

    def __enter__(self) -> TrackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.conn.close()

    def _check_version(self) -> None:
        row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        if row is None:
            self.conn.execute(
                "INSERT INTO meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
            )
        elif row[0] != SCHEMA_VERSION:
            raise DataError(
                f"track database schema {row[0]}, this kit reads schema {SCHEMA_VERSION}",
                path=self.path,
            )

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: a loop and a cron job writing at once take turns."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    # -- writing ----------------------------------------------------------------------------
    def record(
        self,
        taken_at: datetime,
        leaderboard: Sequence[dict[str, Any]],
        submissions: Sequence[dict[str, Any]],
        source: str,
    ) -> Recorded:
        """Store one observation; a new snapshot only if the board or the submissions changed."""
        board = [_board_row(r) for r in leaderboard]
        _check_unique([r["team_id"] for r in board], "team id", "leaderboard")
        subs = sorted((_submission_row(r) for r in submissions), key=lambda r: r["ref"])
        _check_unique([r["ref"] for r in subs], "ref", "submission list")
        board_sha, subs_sha = sha256_json(board), sha256_json(subs)
        when = iso_utc(taken_at)
        with self._write() as db:
            self._insert_board(db, board_sha, board)
            self._insert_submissions(db, subs_sha, subs)
            latest = db.execute(
                "SELECT id, board_sha, submissions_sha FROM snapshots ORDER BY id DESC LIMIT 1"
            ).fetchone()
            if latest is not None and (latest[1], latest[2]) == (board_sha, subs_sha):
                snapshot_id, is_new, previous = latest[0], False, self._before(db, latest[0])
            else:
                cursor = db.execute(
                    "INSERT INTO snapshots(taken_at, source, board_sha, submissions_sha) "
                    "VALUES (?, ?, ?, ?)",
                    (when, source, board_sha, subs_sha),
                )
                snapshot_id, is_new = int(cursor.lastrowid), True
                previous = latest[0] if latest is not None else None
            poll = db.execute(
                "INSERT INTO polls(taken_at, snapshot_id) VALUES (?, ?)", (when, snapshot_id)
            )
        return Recorded(snapshot_id, is_new, previous, int(poll.lastrowid))

    @staticmethod
    def _before(db: sqlite3.Connection, snapshot_id: int) -> int | None:
        row = db.execute("SELECT max(id) FROM snapshots WHERE id < ?", (snapshot_id,)).fetchone()
        return row[0]

    @staticmethod
    def _insert_board(db: sqlite3.Connection, sha: str, rows: list[dict[str, Any]]) -> None:
        if db.execute("SELECT 1 FROM boards WHERE sha=?", (sha,)).fetchone():
            return
        db.execute("INSERT INTO boards(sha, n_teams) VALUES (?, ?)", (sha, len(rows)))
        db.executemany(
            "INSERT INTO board_rows(board_sha, rank, team_id, team_name, submission_date, score, "
            "score_value, submission_count, members) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    sha,
                    r["rank"],
                    r["team_id"],
                    r["team_name"],
                    r["submission_date"],
                    r["score"],
                    parse_score(r["score"]),
                    r["submission_count"],
                    r["members"],
                )
                for r in rows
            ],
        )

    @staticmethod
    def _insert_submissions(db: sqlite3.Connection, sha: str, rows: list[dict[str, Any]]) -> None:
        if db.execute("SELECT 1 FROM submission_sets WHERE sha=?", (sha,)).fetchone():
            return
        db.execute(
            "INSERT INTO submission_sets(sha, n_submissions) VALUES (?, ?)", (sha, len(rows))
        )
        db.executemany(
            f"INSERT INTO submission_rows(set_sha, {', '.join(SUBMISSION_COLUMNS)}) "
            f"VALUES (?{', ?' * len(SUBMISSION_COLUMNS)})",
            [(sha, *(r[c] for c in SUBMISSION_COLUMNS)) for r in rows],
        )

    # -- reading ----------------------------------------------------------------------------
    def count(self, table: str) -> int:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        return int(self.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def snapshots(self) -> pd.DataFrame:
        """Every snapshot, oldest first: id, taken_at (UTC datetime), source, n_teams, ..."""
        frame = self._frame(
            "SELECT s.id, s.taken_at, s.source, s.board_sha, s.submissions_sha, b.n_teams, "
            "u.n_submissions FROM snapshots s JOIN boards b ON b.sha = s.board_sha "
            "JOIN submission_sets u ON u.sha = s.submissions_sha ORDER BY s.id"
        )
        frame["taken_at"] = pd.to_datetime(frame["taken_at"], utc=True)
        return frame

    def latest_ids(self) -> tuple[int | None, int | None]:
        """(latest snapshot id, the one before it); None where there is none."""
        rows = self.conn.execute("SELECT id FROM snapshots ORDER BY id DESC LIMIT 2").fetchall()
        ids = [r[0] for r in rows] + [None, None]
        return ids[0], ids[1]

    def last_poll(self) -> datetime | None:
        row = self.conn.execute("SELECT max(taken_at) FROM polls").fetchone()
        return pd.Timestamp(row[0]).to_pydatetime() if row and row[0] else None

    def taken_at(self, snapshot_id: int) -> datetime:
        row = self.conn.execute(
            "SELECT taken_at FROM snapshots WHERE id=?", (snapshot_id,)
        ).fetchone()
        if row is None:
            raise DataError(f"no snapshot {snapshot_id}", path=self.path)
        return pd.Timestamp(row[0]).to_pydatetime()

    def leaderboard(self, snapshot_id: int) -> pd.DataFrame:
        """The board of one snapshot, by rank."""
        return self._frame(
            f"SELECT {', '.join(BOARD_COLUMNS)}, score_value FROM board_rows r "
            "JOIN snapshots s ON s.board_sha = r.board_sha WHERE s.id = ? ORDER BY rank, team_id",
            (snapshot_id,),
        )

    def submissions(self, snapshot_id: int) -> pd.DataFrame:
        """Your submissions as of one snapshot, newest first, with parsed public/private scores."""
        frame = self._frame(
            f"SELECT {', '.join(SUBMISSION_COLUMNS)} FROM submission_rows r "
            "JOIN snapshots s ON s.submissions_sha = r.set_sha WHERE s.id = ? "
            "ORDER BY date DESC, ref DESC",
            (snapshot_id,),
        )
        frame["public_value"] = frame["public_score"].map(parse_score).astype(float)
        frame["private_value"] = frame["private_score"].map(parse_score).astype(float)
        return frame

    def history(self, team_ids: Sequence[int]) -> pd.DataFrame:
        """taken_at, snapshot_id, team_id, team_name, rank, score_value of `team_ids` in every
        snapshot where they are on the board (oldest first)."""
        if not team_ids:
            return pd.DataFrame(
                columns=["snapshot_id", "taken_at", "team_id", "team_name", "rank", "score_value"]
            )
        marks = ", ".join("?" * len(team_ids))
        frame = self._frame(
            "SELECT s.id AS snapshot_id, s.taken_at, r.team_id, r.team_name, r.rank, r.score_value "
            "FROM snapshots s JOIN board_rows r ON r.board_sha = s.board_sha "
            f"WHERE r.team_id IN ({marks}) ORDER BY s.id, r.rank",
            tuple(int(t) for t in team_ids),
        )
        frame["taken_at"] = pd.to_datetime(frame["taken_at"], utc=True)
        return frame

    def _frame(self, sql: str, params: tuple[Any, ...] = ()) -> pd.DataFrame:
        cursor = self.conn.execute(sql, params)
        columns = [c[0] for c in cursor.description]
        return pd.DataFrame(cursor.fetchall(), columns=columns)


def _board_row(row: dict[str, Any]) -> dict[str, Any]:
    try:
        return {
            "rank": int(row["rank"]),
            "team_id": int(row["team_id"]),
            "team_name": str(row.get("team_name") or ""),
            "submission_date": str(row.get("submission_date") or ""),
            "score": str(row.get("score") or ""),
            "submission_count": _int_or_none(row.get("submission_count")),
            "members": str(row.get("members") or ""),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(
            f"leaderboard row {json.dumps(row, default=str)}: bad rank or team id"
        ) from exc


def _submission_row(row: dict[str, Any]) -> dict[str, Any]:
    try:
        ref = int(row["ref"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"submission row {json.dumps(row, default=str)}: bad ref") from exc
    out = {c: str(row.get(c) or "") for c in SUBMISSION_COLUMNS}
    out["ref"] = ref
    return out


def _check_unique(values: list[int], what: str, where: str) -> None:
    twice = sorted(v for v, n in Counter(values).items() if n > 1)
    if twice:
        raise DataError(f"Kaggle's {where} lists {what} {twice[0]} more than once; nothing stored")


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(value)
