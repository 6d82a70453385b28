"""kit track against the fake Kaggle server with the real kaggle client: snapshots (both
leaderboard sources, every page), idempotent append-only storage, change notifications with a
webhook, the polling loop's error handling, scheduling, views and the CLI."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from fake_kaggle import USERNAME, FakeKaggle, kaggle_server_fixture  # noqa: F401

from kit import kaggle
from kit.competition import Competition, load_competition
from kit.console import console
from kit.errors import DataError, KaggleError, KitError
from kit.store.manifests import SubmissionManifest
from kit.track import loop, notify, schedule, snapshot, views
from kit.track.store import TrackStore

COMP = "facial-keypoints"
SLUG = "facial-keypoints-detection"


# -------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(autouse=True)
def no_retry_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """kit.kaggle's retry waits, recorded instead of slept."""
    waits: list[float] = []
    monkeypatch.setattr(kaggle.RETRY, "sleep", waits.append)
    return waits


@pytest.fixture
def server(kaggle_server: FakeKaggle) -> FakeKaggle:
    kaggle_server.add_competition(SLUG, b"")
    kaggle_server.leaderboards[SLUG] = board(25, me_at=12)
    return kaggle_server


@pytest.fixture
def comp() -> Competition:
    return load_competition(COMP)


class Clock:
    """Snapshot timestamps an hour apart."""

    def __init__(self) -> None:
        self.now = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(hours=1)
        return self.now


def board(n: int, me_at: int | None = None, me_score: float = 2.0) -> list[dict]:
    """n teams by rank, RMSE rising 1.00, 1.05, ...; you (USERNAME) at rank `me_at`."""
    rows = [
        {
            "teamId": 500 + i,
            "teamName": f"team {i}",
            "submissionDate": "2024-02-01T10:00:00.000Z",
            "score": f"{1 + 0.05 * i:.5f}",
        }
        for i in range(n)
    ]
    if me_at is not None:
        rows.insert(
            me_at - 1,
            {
                "teamId": 42,
                "teamName": USERNAME,
                "submissionDate": "2024-02-02T10:00:00.000Z",
                "score": f"{me_score:.5f}",
            },
        )
    return rows


def submission(ref: int, status: str = "COMPLETE", public: str = "", day: int = 1) -> dict:
    return {
        "ref": ref,
        "date": f"2024-02-{day:02d}T10:00:00.000Z",
        "description": f"run {ref}",
        "fileName": f"sub-{ref}.csv",
        "status": status,
        "publicScore": public,
        "privateScore": "",
        "errorDescription": "",
        "teamName": USERNAME,
    }


def counts(comp: Competition) -> dict[str, int]:
    with closing(sqlite3.connect(comp.workspace.root / "track.sqlite3")) as db:
        tables = ("snapshots", "polls", "boards", "board_rows", "submission_rows")
        return {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A local HTTP endpoint; yields (url, received JSON bodies)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", received
    httpd.shutdown()
    httpd.server_close()


# -------------------------------------------------------------------------------------------
# Fetching the leaderboard


def test_multi_page_leaderboard_from_both_sources_agrees(server: FakeKaggle) -> None:
    server.page_size = 7  # 26 rows -> 4 pages
    api = snapshot.fetch_leaderboard(SLUG, "api")
    assert len(server.calls("GetLeaderboard")) == 4
    assert [r["rank"] for r in api] == list(range(1, 27))
    assert api[11]["team_id"] == 42 and api[11]["team_name"] == USERNAME
    assert api[0]["score"] == "1.00000" and api[-1]["score"] == "2.20000"

    download = snapshot.fetch_leaderboard(SLUG, "download")
    fields = ("rank", "team_id", "team_name", "submission_date", "score")
    assert [tuple(str(r[f]) for f in fields) for r in download] == [
        tuple(str(r[f]) for f in fields) for r in api
    ]
    assert download[0]["submission_count"] == "1"


def test_api_pages_that_shift_keep_each_team_once(
    server: FakeKaggle, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        {"team_id": 1, "team_name": "a", "submission_date": "", "score": "1"},
        {"team_id": 2, "team_name": "b", "submission_date": "", "score": "2"},
        {"team_id": 2, "team_name": "b", "submission_date": "", "score": "2"},  # page overlap
        {"team_id": 3, "team_name": "c", "submission_date": "", "score": "3"},
    ]
    monkeypatch.setattr(kaggle, "leaderboard", lambda slug: rows)
    ranked = snapshot.fetch_leaderboard(SLUG, "api")
    assert [(r["rank"], r["team_id"]) for r in ranked] == [(1, 1), (2, 2), (3, 3)]


def test_leaderboard_csv_with_bom_quotes_and_bad_header() -> None:
    text = (
        "\ufeffRank,TeamId,TeamName,LastSubmissionDate,Score,SubmissionCount,TeamMemberUserNames\n"
        '1,7,"Smith, Jones & co",2024-01-01 10:00:00,1.5,3,"smith,jones"\n'
    )
    rows = snapshot.parse_leaderboard_csv(text.encode("utf-8").decode("utf-8-sig"))
    assert rows == [
        {
            "rank": "1",
            "team_id": "7",
            "team_name": "Smith, Jones & co",
            "submission_date": "2024-01-01 10:00:00",
            "score": "1.5",
            "submission_count": "3",
            "members": "smith,jones",
        }
    ]
    with pytest.raises(DataError, match=r"lacks column.*Score"):
        snapshot.parse_leaderboard_csv("Rank,TeamId,TeamName\n1,2,x\n", name="lb.csv")
    with pytest.raises(DataError, match="line 2: bad Rank"):
        snapshot.parse_leaderboard_csv(text.replace("1,7,", "first,7,").lstrip("\ufeff"))


# -------------------------------------------------------------------------------------------
# Storing snapshots


def test_same_data_twice_stores_no_duplicate_rows(server: FakeKaggle, comp: Competition) -> None:
    server.page_size = 5
    server.submissions[SLUG] = [submission(r, public="2.0", day=r - 100) for r in (101, 102, 103)]
    clock = Clock()
    first = snapshot.take_snapshot(comp, clock=clock)
    second = snapshot.take_snapshot(comp, clock=clock)
    assert first.recorded.is_new and not second.recorded.is_new
    assert second.recorded.snapshot_id == first.recorded.snapshot_id
    assert second.changes == []
    assert counts(comp) == {
        "snapshots": 1,
        "polls": 2,
        "boards": 1,
        "board_rows": 26,
        "submission_rows": 3,
    }

    server.leaderboards[SLUG][0]["score"] = "0.99000"  # the leader improves
    third = snapshot.take_snapshot(comp, clock=clock)
    assert third.recorded.is_new and third.recorded.previous_id == first.recorded.snapshot_id
    # a new board, the unchanged submissions are not stored again
    assert counts(comp) == {
        "snapshots": 2,
        "polls": 3,
        "boards": 2,
        "board_rows": 52,
        "submission_rows": 3,
    }
    with TrackStore.for_workspace(comp.workspace.root) as store:
        snaps = store.snapshots()
        assert list(snaps["n_teams"]) == [26, 26]
        assert snaps["taken_at"].iloc[1] - snaps["taken_at"].iloc[0] == timedelta(hours=2)
        assert store.leaderboard(third.recorded.snapshot_id)["score"].iloc[0] == "0.99000"
        assert store.leaderboard(first.recorded.snapshot_id)["score"].iloc[0] == "1.00000"


def test_history_is_append_only(server: FakeKaggle, comp: Competition) -> None:
    snapshot.take_snapshot(comp, clock=Clock())
    with TrackStore.for_workspace(comp.workspace.root) as store:
        for sql in (
            "UPDATE board_rows SET score = '0'",
            "DELETE FROM snapshots",
            "UPDATE polls SET taken_at = ''",
        ):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                store.conn.execute(sql)
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert counts(comp)["board_rows"] == 26


def test_not_a_database_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "track.sqlite3").write_text("not sqlite at all, " * 100)
    with pytest.raises(DataError, match=r"track\.sqlite3: not a usable kit track database"):
        TrackStore.for_workspace(tmp_path)


def test_failed_fetch_records_nothing(server: FakeKaggle, comp: Competition) -> None:
    server.fail("ListSubmissions", 403)
    with pytest.raises(KaggleError, match="403"):
        snapshot.take_snapshot(comp, clock=Clock())
    assert not (comp.workspace.root / "track.sqlite3").exists()


def test_empty_leaderboard(server: FakeKaggle, comp: Competition, cli) -> None:
    server.leaderboards[SLUG] = []
    assert snapshot.fetch_leaderboard(SLUG, "api") == []
    result = snapshot.take_snapshot(comp, clock=Clock())
    assert result.standing.n_teams == 0 and result.standing.rank is None
    assert counts(comp)["board_rows"] == 0 and counts(comp)["snapshots"] == 1
    shown = cli("track", "show", COMP)
    assert shown.code == 0, shown.err
    assert f"{COMP}: 0 teams, 1 snapshot(s)" in shown.out
    assert "you: the leaderboard is empty" in shown.out


# -------------------------------------------------------------------------------------------
# Changes and notifications


def test_pending_to_complete_notifies_once(
    server: FakeKaggle,
    comp: Competition,
    webhook: tuple[str, list[dict]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = webhook
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # the kaggle client's proxy is the fake server
    server.page_size = 2  # three submissions -> two pages
    server.submissions[SLUG] = [
        submission(103, "PENDING", day=3),
        submission(102, public="2.00000", day=2),
        submission(101, public="2.10000", day=1),
    ]
    clock, said = Clock(), []
    first = snapshot.poll(comp, webhook=url, clock=clock, on_event=lambda e: said.append(e.text))
    assert first.changes == [] and received == []  # the first snapshot is the baseline
    assert first.standing.rank == 12 and first.standing.best == 2.0

    server.submissions[SLUG][0].update(status="COMPLETE", publicScore="1.20000")
    server.leaderboards[SLUG] = board(25, me_at=4, me_score=1.2)
    second = snapshot.poll(comp, webhook=url, clock=clock, on_event=lambda e: said.append(e.text))
    assert [c.kind for c in second.changes] == ["scored", "new_best", "rank"]
    assert second.changes[0].details["ref"] == 103
    assert second.changes[1].details == {"best": 1.2, "previous": 2.0}
    assert second.changes[2].details == {"rank": 4, "previous": 12, "teams": 26}

    third = snapshot.poll(comp, webhook=url, clock=clock, on_event=lambda e: said.append(e.text))
    assert third.changes == [] and not third.recorded.is_new
    assert len(received) == 1  # announced exactly once
    body = received[0]
    assert body["competition"] == COMP and body["taken_at"] == "2024-03-01T14:00:00Z"
    assert [c["kind"] for c in body["changes"]] == ["scored", "new_best", "rank"]
    assert "submission 103 (sub-103.csv) scored 1.20000 public" in body["text"]
    assert "rank 12 -> 4 of 26 (up)" in body["text"]
    assert sum("scored 1.20000" in line for line in said) == 1


def test_failed_submission_and_unreachable_webhook_do_not_crash(
    server: FakeKaggle, comp: Competition, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    closed = "http://127.0.0.1:9/hook"  # discard port: nothing listens
    server.submissions[SLUG] = [submission(201, "PENDING")]
    snapshot.poll(comp, webhook=closed, clock=Clock(), on_event=lambda e: None)
    server.submissions[SLUG][0].update(status="ERROR", errorDescription="bad header")
    result = snapshot.poll(comp, webhook=closed, clock=Clock(), on_event=lambda e: None)
    assert [c.message for c in result.changes] == [
        "submission 201 (sub-201.csv) failed: bad header"
    ]
    failure = notify.post_webhook(closed, {"x": 1}, timeout=2)
    assert failure is not None and failure.startswith("webhook unreachable")


def test_webhook_url_is_checked_up_front(cli) -> None:
    result = cli("track", "snap", COMP, "--webhook", "ftp://example.org/x")
    assert result.code == 1 and "is not an http(s) URL" in result.err
    assert "Traceback" not in result.err


def test_team_option_and_unknown_team(server: FakeKaggle, comp: Competition) -> None:
    result = snapshot.take_snapshot(comp, clock=Clock(), team="TEAM 3")
    assert (result.standing.team_id, result.standing.rank) == (503, 4)
    with TrackStore.for_workspace(comp.workspace.root) as store:
        sid = result.recorded.snapshot_id
        assert views.standing(store, sid, "rmse", team="42").rank == 12
        assert views.standing(store, sid, "rmse", team="nobody").rank is None


# -------------------------------------------------------------------------------------------
# The loop


def test_429_retried_inside_then_success(
    server: FakeKaggle, comp: Competition, no_retry_sleep: list[float]
) -> None:
    server.fail("DownloadLeaderboard", 429, retry_after="7")
    result = snapshot.take_snapshot(comp, clock=Clock())
    assert result.standing.n_teams == 26
    assert no_retry_sleep == [7.0]  # Retry-After honoured
    assert len(server.calls("DownloadLeaderboard")) == 2


def test_loop_survives_500_and_backs_off_on_429(
    server: FakeKaggle, comp: Competition, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kaggle.RETRY, "attempts", 1)  # let every failure reach the loop
    server.fail("DownloadLeaderboard", 500)
    server.fail("DownloadLeaderboard", 429, times=2)
    slept, said = [], []
    every = 1800.0
    stats = loop.run_loop(
        lambda: snapshot.take_snapshot(comp, clock=Clock()),
        every,
        max_iterations=5,
        sleep=slept.append,
        clock=lambda: 0.0,
        rng=lambda: 0.5,  # no jitter
        on_event=lambda e: said.append(e.text),
    )
    assert (stats.polls, stats.errors, stats.interrupted) == (5, 3, False)
    # 500: keep the cadence; 429 twice in a row: 4x and 8x; success: back to the cadence
    assert slept == [every, 4 * every, 8 * every, every]
    assert counts(comp)["polls"] == 2 and counts(comp)["snapshots"] == 1
    assert "HTTP 500" in said[0] and "HTTP 429" in said[1]


def test_loop_jitter_and_retry_after() -> None:
    backoff = loop.Backoff(every=100.0, jitter=0.1, rng=lambda: 1.0)
    assert backoff.jittered(100.0) == pytest.approx(110.0)

    class Response:
        status_code, headers = 429, {"Retry-After": "3600"}

    cause = OSError("rate limited")
    cause.response = Response()  # type: ignore[attr-defined]
    error = KaggleError("rate limited")
    error.__cause__ = cause
    assert loop.http_status(error) == 429 and loop.is_transient(error)
    assert backoff.after_error(error, failures=1) == 3600.0  # Retry-After beats 2 x every


def test_loop_fails_fast_on_a_permanent_first_error(server: FakeKaggle, comp: Competition) -> None:
    server.fail("DownloadLeaderboard", 403)
    slept: list[float] = []
    with pytest.raises(KaggleError, match="accept the competition's rules"):
        loop.run_loop(
            lambda: snapshot.take_snapshot(comp),
            60.0,
            max_iterations=3,
            sleep=slept.append,
            on_event=lambda e: None,
        )
    assert slept == []


def test_loop_stops_cleanly_on_ctrl_c() -> None:
    calls = []

    def poll() -> None:
        calls.append(1)

    def sleep(seconds: float) -> None:
        if len(calls) == 2:
            raise KeyboardInterrupt

    said: list[str] = []
    stats = loop.run_loop(
        poll, 60.0, sleep=sleep, clock=lambda: 0.0, on_event=lambda e: said.append(e.text)
    )
    assert stats.interrupted and stats.polls == 2 and said == ["stopped after 2 poll(s)"]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("1h", 3600), ("1h30m", 5400), ("90s", 90), ("2d", 172800)]
)
def test_parse_every(text: str, seconds: float) -> None:
    assert loop.parse_every(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "half an hour", "5x", "10s"])
def test_parse_every_rejects(text: str) -> None:
    with pytest.raises(KitError, match="--every"):
        loop.parse_every(text)


# -------------------------------------------------------------------------------------------
# The CLI


def test_cli_positional_form_and_subcommands(
    server: FakeKaggle, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 160)  # a wide terminal: table cells stay on one line
    server.submissions[SLUG] = [submission(301, public="2.00000")]
    short = cli("track", COMP)  # `kit track COMP` == `kit track snap COMP`
    assert short.code == 0, short.err
    assert "new snapshot #1: 26 teams, 1 submissions; you: rank 12, best 2" in short.out
    server.page_size = 10
    looped = cli("track", "--every", "1m", COMP, "--source", "api", "--max-polls", "1")
    assert looped.code == 0, looped.err
    assert "new snapshot #2" in looped.out and "1 poll(s), 0 failed" in looped.out
    assert len(server.calls("GetLeaderboard")) == 3

    shown = cli("track", "show", COMP)
    assert shown.code == 0, shown.err
    assert f"you: {USERNAME}, rank 12 of 26" in shown.out
    assert "team 9" in shown.out and "team 10" not in shown.out  # you are 12th
    assert "sub-301.csv" in shown.out


def test_cli_show_fits_80_columns_and_gives_the_whole_data_on_request(
    server: FakeKaggle, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console, "width", 80)
    note = "heatmap and resnet stacked, pseudo labels from the stack " * 6
    server.submissions[SLUG] = [submission(301, public="2.00000") | {"description": note}]
    assert cli("track", COMP).code == 0
    shown = cli("track", "show", COMP)
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    assert max(len(line) for line in lines) <= 80
    row = [line for line in lines if " 301 " in line]
    assert len(row) == 1 and row[0].rstrip().endswith("…")  # one line, not eleven
    wide = cli("track", "show", COMP, "--wide")
    assert wide.code == 0 and note.strip() in wide.out
    as_csv = cli("track", "show", COMP, "--format", "csv")
    frame = pd.read_csv(io.StringIO(as_csv.out))
    assert as_csv.code == 0 and frame["note"].tolist() == [note] and frame["ref"].tolist() == [301]
    as_json = json.loads(cli("track", "show", COMP, "--format", "json").out)
    assert as_json["submissions"][0]["note"] == note and len(as_json["top"]) == 10
    both = cli("track", "show", COMP, "--format", "csv", "--wide")
    assert both.code == 1 and "--wide applies to tables" in both.err
    assert len(both.err.strip().splitlines()) == 1


def test_cli_show_before_any_snapshot(cli) -> None:
    result = cli("track", "show", COMP)
    assert result.code == 1
    assert "has not been tracked yet" in result.err and "kit track snap" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_show_joins_local_cv_from_manifests(
    server: FakeKaggle, comp: Competition, tmp_path: Path
) -> None:
    server.submissions[SLUG] = [
        submission(401, public="2.0", day=2),
        submission(402, day=1),
        submission(403, public="2.5", day=3),
    ]
    snapshot.take_snapshot(comp, clock=Clock())
    folder = tmp_path / "submissions" / COMP
    folder.mkdir(parents=True)

    def manifest(**fields) -> SubmissionManifest:
        source = {"kind": "run", "id": "r"}
        return SubmissionManifest(COMP, csv_sha256="0", metric="rmse", source=source, **fields)

    manifest(kaggle_ref=401, cv_score=1.9, file="x.csv").write(folder / "a.json")
    manifest(cv_score=2.2, file="subs/sub-402.csv").write(folder / "b.json")  # matched by name
    (folder / "c.json").write_text("{broken")
    with TrackStore.for_workspace(comp.workspace.root) as store:
        ov = views.overview(store, COMP, "rmse", folder)
    cv = dict(zip(ov.submissions["ref"], ov.submissions["cv_score"], strict=True))
    assert cv[401] == 1.9 and cv[402] == 2.2 and cv[403] != cv[403]  # NaN: no manifest
    assert len(ov.warnings) == 1 and "c.json: unreadable submission manifest" in ov.warnings[0]


# -------------------------------------------------------------------------------------------
# Scheduling


def job(tmp_path: Path, every: float = 3600, **kw) -> schedule.Job:
    return schedule.Job(
        competition=COMP,
        every=every,
        workdir=tmp_path / "repo",
        work_root=tmp_path / "work",
        kit=("/opt/kit/bin/kit",),
        **kw,
    )


def test_cron_schedules() -> None:
    seed = COMP
    hourly = schedule.cron_schedule(3600, seed)
    minute = int(hourly.split()[0])
    assert hourly == f"{minute} * * * *" and 0 <= minute < 60
    half = schedule.cron_schedule(1800, seed).split()
    assert half[1:] == ["*"] * 4 and [int(m) for m in half[0].split(",")] == [
        minute % 30,
        minute % 30 + 30,
    ]
    assert schedule.cron_schedule(6 * 3600, seed).split()[1] == ",".join(
        str(h) for h in range(minute % 6, 24, 6)
    )
    assert schedule.cron_schedule(60, seed) == "* * * * *"
    for bad in (45 * 60, 5 * 3600, 90):
        with pytest.raises(KitError, match="cron cannot"):
            schedule.cron_schedule(bad, seed)


def test_install_prints_a_crontab_line(cli, tmp_path: Path) -> None:
    result = cli(
        "--work", tmp_path / "w", "track", "install", COMP, "--every", "1h", "--team", "my team"
    )
    assert result.code == 0, result.err
    line = result.out.strip()
    assert line.endswith(f"# kit-track:{COMP}") and len(line.splitlines()) == 1
    assert f"--work {tmp_path / 'w'} track snap {COMP} --team 'my team' --source download" in line
    assert f">> {tmp_path / 'w' / COMP / 'track.log'} 2>&1" in line
    assert line.split()[1:5] == ["*", "*", "*", "*"]


def test_systemd_units(tmp_path: Path) -> None:
    units = schedule.systemd_units(job(tmp_path, every=1800, options=("--team", "50% off")))
    service, timer = (
        units["kit-track-facial-keypoints.service"],
        units["kit-track-facial-keypoints.timer"],
    )
    assert "Type=oneshot" in service
    assert (
        f"ExecStart=/opt/kit/bin/kit --work {tmp_path / 'work'} track snap {COMP} "
        '--team "50%% off"' in service
    )
    assert "Description=kit track facial-keypoints every 30m" in timer
    assert "OnUnitActiveSec=1800s" in timer and "RandomizedDelaySec=180s" in timer
    assert "Unit=kit-track-facial-keypoints.service" in timer and "WantedBy=timers.target" in timer


def _fake_tool(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_install_apply_merges_the_crontab(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir, tab = tmp_path / "bin", tmp_path / "crontab.txt"
    bin_dir.mkdir()
    _fake_tool(
        bin_dir,
        "crontab",
        f"""
if [ "$1" = "-l" ]; then
  [ -f {tab} ] && cat {tab} && exit 0
  echo "no crontab for tester" >&2; exit 1
fi
cat > {tab}
""",
    )
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    first = cli("track", "install", COMP, "--every", "30m", "--apply")
    assert first.code == 0, first.err
    assert tab.read_text().count(f"# kit-track:{COMP}") == 1
    tab.write_text("MAILTO=me\n0 5 * * * backup.sh\n" + tab.read_text())
    again = cli("track", "install", COMP, "--every", "1h", "--apply")
    assert again.code == 0, again.err
    lines = tab.read_text().splitlines()
    assert lines[:2] == ["MAILTO=me", "0 5 * * * backup.sh"]  # the user's lines survive
    assert len(lines) == 3 and lines[2].split()[1] == "*"  # one line, now hourly


def test_install_apply_systemd(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir, calls = tmp_path / "bin", tmp_path / "systemctl.log"
    bin_dir.mkdir()
    _fake_tool(bin_dir, "systemctl", f'echo "$@" >> {calls}\n')
    home = tmp_path / "home"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    result = cli("track", "install", COMP, "--every", "45m", "--systemd", "--apply")
    assert result.code == 0, result.err
    units = home / ".config" / "systemd" / "user"
    assert "OnUnitActiveSec=2700s" in (units / "kit-track-facial-keypoints.timer").read_text()
    assert "ExecStart=" in (units / "kit-track-facial-keypoints.service").read_text()
    assert calls.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable --now kit-track-facial-keypoints.timer",
    ]


def test_install_apply_without_crontab_is_a_clear_error(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = cli("track", "install", COMP, "--every", "1h", "--apply")
    assert result.code == 1 and "crontab is not installed" in result.err


def test_format_every_inverts_parse_every() -> None:
    for text in ("30m", "1h", "1h30m", "2d", "1m30s"):
        assert loop.format_every(loop.parse_every(text)) == text


def test_changes_follow_the_metric_direction() -> None:
    def at(rank: int | None, best: float | None) -> views.Standing:
        when = datetime(2024, 1, 1, tzinfo=UTC)
        return views.Standing(1, when, 42, "me", rank, 10, best, best)

    none = pandas_empty_submissions()
    up = notify.detect_changes(at(5, 0.80), at(5, 0.85), none, none, higher_is_better=True)
    assert [c.kind for c in up] == ["new_best"]
    worse = notify.detect_changes(at(5, 0.80), at(6, 0.85), none, none, higher_is_better=False)
    assert [(c.kind, c.message) for c in worse] == [("rank", "rank 5 -> 6 of 10 (down)")]
    entered = notify.detect_changes(at(None, None), at(3, 0.5), none, none, False)
    assert [c.message for c in entered] == [
        "new best public score 0.5",
        "on the board at rank 3 of 10",
    ]


def pandas_empty_submissions() -> pd.DataFrame:
    return pd.DataFrame(
        columns=[
            "ref",
            "date",
            "file_name",
            "description",
            "status",
            "public_score",
            "private_score",
            "error_description",
        ]
    )


def test_a_team_listed_twice_is_refused(comp: Competition) -> None:
    row = {"rank": 1, "team_id": 5, "team_name": "a", "score": "1"}
    with TrackStore.for_workspace(comp.workspace.root) as store:
        with pytest.raises(DataError, match="lists team id 5 more than once"):
            store.record(datetime.now(UTC), [row, {**row, "rank": 2}], [], "download")
        assert store.count("snapshots") == 0 and store.count("board_rows") == 0


def test_who_you_are() -> None:
    board = pd.DataFrame(
        {
            "team_id": [1, 2, 3],
            "team_name": ["Alpha", "Beta Team", "kit-tester"],
            "members": ["", "ann,kit-tester", ""],
        }
    )
    subs = pd.DataFrame({"team_name": ["beta team", "Alpha"]})  # newest first
    none = subs.iloc[:0]
    assert views.resolve_team(board, subs, team="ALPHA") == 1  # --team wins
    assert views.resolve_team(board, subs, team="3") == 3  # or a team id
    assert views.resolve_team(board, subs, username="kit-tester") == 2  # newest submission's team
    assert views.resolve_team(board, none, username="kit-tester") == 2  # member user names
    assert views.resolve_team(board.assign(members=""), none, username="KIT-tester") == 3
    assert views.resolve_team(board, none, username="") is None
    assert views.resolve_team(board.iloc[:0], subs, team="Alpha") is None
