"""kit track's charts and HTML report, on a tracking history written straight into the store:
the PNGs are real pictures of the database's numbers, and the report is one self-contained page
that headless Chromium renders (when installed)."""

from __future__ import annotations

import base64
import re
import shutil
import sqlite3
import subprocess
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kit.competition import Competition, load_competition
from kit.store.manifests import SubmissionManifest
from kit.track import plots, report, views
from kit.track.store import TrackStore

COMP = "facial-keypoints"
ME = 7  # your team id
START = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
N_SNAPSHOTS = 5


@pytest.fixture
def comp() -> Competition:
    return load_competition(COMP)


def history(snapshot: int) -> tuple[list[dict], list[dict]]:
    """Board and submissions of snapshot `snapshot`: 12 teams; you climb from rank 9 as your
    RMSE falls; the leader improves every other snapshot."""
    scores = {100 + i: 1.0 + 0.1 * i for i in range(11)}
    scores[100] -= 0.02 * (snapshot // 2)
    scores[ME] = 2.05 - 0.2 * snapshot
    names = {team: f"team {team}" for team in scores} | {ME: "<b>me</b>"}  # escaped in HTML
    ordered = sorted(scores, key=lambda t: (scores[t], t))
    board = [
        {
            "rank": rank,
            "team_id": team,
            "team_name": names[team],
            "submission_date": "2024-02-01T10:00:00.000Z",
            "score": f"{scores[team]:.5f}",
            "submission_count": 2,
            "members": "kit-tester" if team == ME else "",
        }
        for rank, team in enumerate(ordered, start=1)
    ]
    subs = [
        {
            "ref": 900 + k,
            "date": f"2024-03-0{k + 1}T10:00:00.000Z",
            "description": f"run {k}",
            "file_name": f"sub-{k}.csv",
            "status": "COMPLETE",
            "public_score": f"{2.05 - 0.2 * k:.5f}",
            "private_score": "",
            "error_description": "",
        }
        for k in range(snapshot + 1)
    ]
    return board, subs


@pytest.fixture
def tracked(comp: Competition, tmp_path: Path) -> tuple[TrackStore, views.Overview]:
    """A store with five snapshots, manifests with CV scores, and its overview."""
    store = TrackStore.for_workspace(comp.workspace.root)
    for snap in range(N_SNAPSHOTS):
        board, subs = history(snap)
        store.record(START + timedelta(hours=6 * snap), board, subs, "download")
    folder = tmp_path / "submissions"
    folder.mkdir()
    for k in range(N_SNAPSHOTS):
        cv = 1.95 - 0.2 * k + 0.03 * (k % 2)
        SubmissionManifest(
            COMP, f"{k}.csv", "0", cv, "rmse", {"kind": "run", "id": "r"}, kaggle_ref=900 + k
        ).write(folder / f"{k}.json")
    ov = views.overview(store, COMP, comp.metric, folder, username="kit-tester")
    yield store, ov
    store.close()


def db_series(comp: Competition, team_id: int, column: str) -> tuple[list[datetime], list[float]]:
    """A team's `column` per snapshot, read with plain SQL (independent of the store's queries)."""
    with closing(sqlite3.connect(comp.workspace.root / "track.sqlite3")) as db:
        rows = db.execute(
            f"SELECT s.taken_at, r.{column} FROM snapshots s JOIN board_rows r "
            "ON r.board_sha = s.board_sha WHERE r.team_id = ? ORDER BY s.id",
            (team_id,),
        ).fetchall()
    times = [datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ") for t, _ in rows]
    return times, [float(v) for _, v in rows]


def assert_picture(path: Path) -> np.ndarray:
    """A real chart: the expected size, not blank, not trivially small."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == (1000, 500)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert path.stat().st_size > 15_000
    assert pixels.std() > 10 and (pixels < 100).mean() > 0.005  # dark ink: lines, text
    return pixels


def test_score_and_rank_charts_plot_the_database(
    comp: Competition, tracked: tuple[TrackStore, views.Overview], tmp_path: Path
) -> None:
    store, ov = tracked
    assert (ov.now.team_id, ov.now.rank, ov.before.rank) == (ME, 4, 6)
    charts = plots.write_charts(store, ov, tmp_path / "charts", top_k=3)
    scores, rank, _ = charts
    for chart in charts:
        assert_picture(chart.path)

    # you and the three teams now on top, each exactly as stored
    assert set(scores.series) == {"you", "team 100", "team 101", "team 102"}
    assert scores.series["you"] == db_series(comp, ME, "score_value")
    assert scores.series["team 100"] == db_series(comp, 100, "score_value")
    assert scores.series["you"][1] == pytest.approx([2.05, 1.85, 1.65, 1.45, 1.25])
    assert scores.series["team 100"][1] == pytest.approx([1.0, 1.0, 0.98, 0.98, 0.96])

    assert list(rank.series) == ["you"]
    assert rank.series["you"] == db_series(comp, ME, "rank")
    assert rank.series["you"][1] == [12.0, 10.0, 8.0, 6.0, 4.0]


def test_cv_chart_pairs_manifest_cv_with_public_score(
    tracked: tuple[TrackStore, views.Overview], tmp_path: Path
) -> None:
    _, ov = tracked
    chart = plots.cv_chart(ov, tmp_path / "cv.png")
    assert_picture(chart.path)
    cv, public = chart.series["submissions"]
    pairs = sorted(zip(cv, public, strict=True))
    expected = sorted((1.95 - 0.2 * k + 0.03 * (k % 2), 2.05 - 0.2 * k) for k in range(5))
    assert np.allclose(pairs, expected)


def test_charts_without_data(comp: Competition, tmp_path: Path) -> None:
    with TrackStore.for_workspace(comp.workspace.root) as store:
        store.record(START, [], [], "api")
        ov = views.overview(store, COMP, comp.metric, tmp_path / "none")
        charts = plots.write_charts(store, ov, tmp_path / "charts")
    assert [c.series for c in charts] == [{}, {}, {}]
    for chart in charts:
        with Image.open(chart.path) as image:
            assert image.size == (1000, 500)


def test_report_is_one_self_contained_page(
    tracked: tuple[TrackStore, views.Overview], tmp_path: Path
) -> None:
    store, ov = tracked
    charts = plots.write_charts(store, ov, tmp_path / "charts")
    page = report.write_report(ov, charts, tmp_path / "report.html").read_text(encoding="utf-8")
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(i) for i in images] == [c.path.read_bytes() for c in charts]
    assert not re.search(r"(src|href)=\"(https?:|//|file:)", page)  # nothing fetched
    assert "<script" not in page
    assert "&lt;b&gt;me&lt;/b&gt;" in page and "<b>me</b>" not in page
    assert page.count('<tr class="you">') == 1
    assert "you: &lt;b&gt;me&lt;/b&gt;, rank 4 of 12 (▲ 2 since 03-02 06:00)" in page
    assert "best public score: 1.25 (-0.2 since 03-02 06:00); lower is better" in page
    assert "<td>2024-03-05 10:00</td><td>904</td><td>sub-4.csv</td>" in page


def test_report_cli(comp: Competition, tracked: tuple[TrackStore, views.Overview], cli) -> None:
    result = cli("track", "report", COMP, "--team", "<b>me</b>")
    assert result.code == 0, result.err
    folder = comp.workspace.root / "track"
    assert sorted(p.name for p in folder.iterdir()) == [
        "cv_vs_public.png",
        "rank.png",
        "report.html",
        "scores.png",
    ]
    assert str(folder / "report.html") in result.out
    plotted = cli("track", "plot", COMP, "--out", folder / "again")
    assert plotted.code == 0, plotted.err
    assert len(list((folder / "again").glob("*.png"))) == 3


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(
    tracked: tuple[TrackStore, views.Overview], tmp_path: Path
) -> None:
    store, ov = tracked
    page = report.write_report(
        ov, plots.write_charts(store, ov, tmp_path / "charts"), tmp_path / "report.html"
    )
    shot = tmp_path / "shot.png"
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1200,900",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1200, 900)
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.std() > 20  # not a blank page
    # the first chart is in view: a good share of the window is neither white nor background
    assert (pixels.mean(axis=2) < 200).mean() > 0.01
