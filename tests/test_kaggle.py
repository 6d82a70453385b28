"""kit.kaggle with the REAL kaggle client against the fake Kaggle server (tests/fake_kaggle.py)."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest
from fake_kaggle import (
    LEADERBOARD_HEADER,
    FakeKaggle,
    basic_auth,
    kaggle_server_fixture,  # noqa: F401  (provides the kaggle_server fixture)
)

import kit.kaggle
from kit.errors import DataError, KaggleError
from kit.kaggle import (
    RetryPolicy,
    download_competition_files,
    download_leaderboard,
    leaderboard,
    list_submissions,
    submit,
)

SLUG = "some-competition"
ATTEMPTS = 4


def make_zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


DATA_ZIP = make_zip({"train.csv": b"a,b\n1,2\n", "test.csv": b"a\n3\n"})


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries record their delays instead of sleeping; full (not random) backoff."""
    recorded: list[float] = []
    policy = RetryPolicy(attempts=ATTEMPTS, base_delay=1.0, sleep=recorded.append, jitter=lambda: 1)
    monkeypatch.setattr(kit.kaggle, "RETRY", policy)
    return recorded


@pytest.fixture
def server(kaggle_server: FakeKaggle) -> FakeKaggle:
    kaggle_server.add_competition(SLUG, DATA_ZIP)
    return kaggle_server


def one_line_error(excinfo: pytest.ExceptionInfo[KaggleError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# -- downloads -----------------------------------------------------------------------------------


def test_download_returns_the_exact_zip(server: FakeKaggle, tmp_path: Path) -> None:
    path = download_competition_files(SLUG, tmp_path / "dl")
    assert path == tmp_path / "dl" / f"{SLUG}.zip"
    assert path.read_bytes() == DATA_ZIP
    (call,) = server.calls("DownloadDataFiles")
    assert call.body == {"competitionName": SLUG}
    assert call.auth == basic_auth()


def test_force_replaces_a_local_zip_the_client_would_keep(
    server: FakeKaggle, tmp_path: Path
) -> None:
    # Same size and newer than Kaggle's Last-Modified: the client keeps it unless forced.
    stale = tmp_path / f"{SLUG}.zip"
    stale.write_bytes(b"x" * len(DATA_ZIP))
    with pytest.raises(KaggleError) as excinfo:
        download_competition_files(SLUG, tmp_path)
    assert "not a readable zip" in one_line_error(excinfo)
    assert "--force" in str(excinfo.value)
    assert download_competition_files(SLUG, tmp_path, force=True).read_bytes() == DATA_ZIP


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, ["HTTP 401", "credentials", "KAGGLE_USERNAME/KAGGLE_KEY", "kaggle.com/settings"]),
        (403, ["HTTP 403", f"https://www.kaggle.com/c/{SLUG}/rules", "check the slug"]),
        (404, [f"no such competition '{SLUG}'", "kaggle_slug"]),
    ],
)
def test_client_errors_give_one_line_and_are_not_retried(
    server: FakeKaggle, tmp_path: Path, sleeps: list[float], status: int, expected: list[str]
) -> None:
    server.fail("DownloadDataFiles", status, message="nope")
    with pytest.raises(KaggleError) as excinfo:
        download_competition_files(SLUG, tmp_path)
    message = one_line_error(excinfo)
    for part in expected:
        assert part in message
    assert len(server.calls("DownloadDataFiles")) == 1
    assert sleeps == []


def test_unknown_competition_is_a_404(server: FakeKaggle, tmp_path: Path) -> None:
    with pytest.raises(KaggleError, match="no such competition 'no-such-comp'"):
        download_competition_files("no-such-comp", tmp_path)


def test_429_honours_retry_after_seconds(
    server: FakeKaggle, tmp_path: Path, sleeps: list[float]
) -> None:
    server.fail("DownloadDataFiles", 429, retry_after="7")
    path = download_competition_files(SLUG, tmp_path)
    assert path.read_bytes() == DATA_ZIP
    assert sleeps == [7.0]
    assert len(server.calls("DownloadDataFiles")) == 2


def test_429_honours_retry_after_http_date(
    server: FakeKaggle, tmp_path: Path, sleeps: list[float]
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=40)
    server.fail("GetLeaderboard", 429, retry_after=format_datetime(when, usegmt=True))
    assert leaderboard(SLUG) == []
    (delay,) = sleeps
    assert 30 < delay <= 40


def test_429_with_a_long_retry_after_fails_at_once(
    server: FakeKaggle, tmp_path: Path, sleeps: list[float]
) -> None:
    server.fail("DownloadDataFiles", 429, retry_after="3600")
    with pytest.raises(KaggleError) as excinfo:
        download_competition_files(SLUG, tmp_path)
    assert "rate limited" in one_line_error(excinfo)
    assert "3600 s" in str(excinfo.value)
    assert sleeps == []


def test_persistent_429_gives_rate_limited_after_all_attempts(
    server: FakeKaggle, tmp_path: Path, sleeps: list[float]
) -> None:
    server.fail("DownloadDataFiles", 429, times=10)
    with pytest.raises(KaggleError) as excinfo:
        download_competition_files(SLUG, tmp_path)
    assert f"rate limited by Kaggle, HTTP 429 after {ATTEMPTS} attempt(s)" in one_line_error(
        excinfo
    )
    assert "try again later" in str(excinfo.value)
    assert sleeps == [1.0, 2.0, 4.0]  # no Retry-After: exponential backoff


def test_500_twice_then_success(server: FakeKaggle, tmp_path: Path, sleeps: list[float]) -> None:
    server.fail("DownloadDataFiles", 500, times=2)
    assert download_competition_files(SLUG, tmp_path).read_bytes() == DATA_ZIP
    assert sleeps == [1.0, 2.0]
    assert len(server.calls("DownloadDataFiles")) == 3


def test_5xx_of_the_redirected_file_is_retried(server: FakeKaggle, tmp_path: Path) -> None:
    server.fail("File", 503)
    assert download_competition_files(SLUG, tmp_path).read_bytes() == DATA_ZIP
    assert len(server.calls("File")) == 2


def test_persistent_500_fails_after_all_attempts(
    server: FakeKaggle, tmp_path: Path, sleeps: list[float]
) -> None:
    server.fail("DownloadDataFiles", 500, times=10)
    with pytest.raises(KaggleError) as excinfo:
        download_competition_files(SLUG, tmp_path)
    message = one_line_error(excinfo)
    assert f"Kaggle server error, HTTP 500 after {ATTEMPTS} attempt(s)" in message
    assert "try again later" in message
    assert len(server.calls("DownloadDataFiles")) == ATTEMPTS
    assert len(sleeps) == ATTEMPTS - 1


def test_unreachable_server_fails_after_all_attempts(
    kaggle_server: FakeKaggle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")
    with pytest.raises(KaggleError) as excinfo:
        download_competition_files(SLUG, tmp_path)
    assert "cannot reach Kaggle" in one_line_error(excinfo)
    assert len(sleeps) == ATTEMPTS - 1


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    full = RetryPolicy(base_delay=2.0, max_delay=10.0, jitter=lambda: 1.0)
    half = RetryPolicy(base_delay=2.0, max_delay=10.0, jitter=lambda: 0.0)
    assert [full.backoff(r) for r in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 10.0]
    assert [half.backoff(r) for r in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]


# -- credentials ---------------------------------------------------------------------------------


def test_no_credentials_says_where_kaggle_looks(
    server: FakeKaggle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    with pytest.raises(KaggleError) as excinfo:
        download_competition_files(SLUG, tmp_path)
    message = one_line_error(excinfo)
    for where in ("KAGGLE_USERNAME", "KAGGLE_KEY", "kaggle.json", "KAGGLE_CONFIG_DIR", "~/.kaggle"):
        assert where in message
    assert "KAGGLE_API_TOKEN" in message
    assert server.calls_log == []


@pytest.fixture
def stale_client(
    kaggle_server: FakeKaggle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KaggleApi as if imported under another environment: it snapshots its endpoint flag and
    config folder into class attributes at import time."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    monkeypatch.setattr(KaggleApi, "args", [])  # no "--local": production endpoint
    monkeypatch.setattr(KaggleApi, "config_dir", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(KaggleApi, "config", str(tmp_path / "elsewhere" / "kaggle.json"))


@pytest.mark.usefixtures("stale_client")
def test_kaggle_json_in_kaggle_config_dir_is_used(
    server: FakeKaggle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    config = tmp_path / "config"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": "someone", "key": "abc"}))
    (config / "kaggle.json").chmod(0o600)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(config))
    download_competition_files(SLUG, tmp_path / "dl")
    assert server.calls("DownloadDataFiles")[0].auth == basic_auth("someone", "abc")


@pytest.mark.usefixtures("stale_client")
def test_the_environment_at_call_time_counts_after_import(
    server: FakeKaggle, tmp_path: Path
) -> None:
    assert download_competition_files(SLUG, tmp_path).read_bytes() == DATA_ZIP


# -- submissions ---------------------------------------------------------------------------------


@pytest.fixture
def submission_file(tmp_path: Path) -> Path:
    path = tmp_path / "submission.csv"
    path.write_bytes(b"RowId,Location\n1,42.5\n2,17.25\n")
    return path


def test_submit_uploads_the_file_and_returns_the_ref(
    server: FakeKaggle, submission_file: Path
) -> None:
    ref = submit(SLUG, submission_file, "lenet fold-avg")
    assert ref > 0
    assert server.received[ref] == submission_file.read_bytes()
    (start,) = server.calls("StartSubmissionUpload")
    assert start.body["fileName"] == "submission.csv"
    assert start.body["contentLength"] == submission_file.stat().st_size
    (create,) = server.calls("CreateSubmission")
    assert create.body["submissionDescription"] == "lenet fold-avg"
    assert list_submissions(SLUG)[0]["ref"] == ref


def test_submit_upload_failure_raises(server: FakeKaggle, submission_file: Path) -> None:
    server.fail("Upload", 403)
    with pytest.raises(KaggleError) as excinfo:
        submit(SLUG, submission_file, "x")
    assert "Could not submit to competition" in one_line_error(excinfo)
    assert server.calls("CreateSubmission") == []
    assert server.received == {}


def test_submit_400_explains_daily_limit_or_not_joined(
    server: FakeKaggle, submission_file: Path
) -> None:
    server.fail("CreateSubmission", 400, message="Submission limit reached for today")
    with pytest.raises(KaggleError) as excinfo:
        submit(SLUG, submission_file, "x")
    message = one_line_error(excinfo)
    assert "Submission limit reached for today" in message
    assert "daily submission limit" in message
    assert f"https://www.kaggle.com/c/{SLUG}/rules" in message


def test_submit_403_points_to_the_rules(server: FakeKaggle, submission_file: Path) -> None:
    server.fail("StartSubmissionUpload", 403)
    with pytest.raises(KaggleError, match=f"accept the competition's rules at .*/c/{SLUG}/rules"):
        submit(SLUG, submission_file, "x")


def test_submit_retries_429_but_never_a_5xx(
    server: FakeKaggle, submission_file: Path, sleeps: list[float]
) -> None:
    server.fail("StartSubmissionUpload", 429, retry_after="5")
    assert submit(SLUG, submission_file, "x") > 0
    assert sleeps == [5.0]

    server.fail("CreateSubmission", 500)
    with pytest.raises(
        KaggleError, match=r"HTTP 500 after 1 attempt.*whether the submission arrived"
    ):
        submit(SLUG, submission_file, "y")
    assert len(server.calls("CreateSubmission")) == 2  # one success, one failure, no retry


def test_submit_of_a_missing_file_is_a_data_error(server: FakeKaggle, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such submission file"):
        submit(SLUG, tmp_path / "missing.csv", "x")
    assert server.calls_log == []


# -- paged listings ------------------------------------------------------------------------------


def test_list_submissions_reads_every_page(server: FakeKaggle) -> None:
    server.page_size = 2
    server.submissions[SLUG] = [
        {
            "ref": 500 - i,
            "date": f"2024-03-0{i + 1}T08:30:00.250Z",
            "description": f"run {i}",
            "fileName": f"sub{i}.csv",
            "status": ["COMPLETE", "PENDING", "ERROR"][i % 3],
            "publicScore": f"{2.5 + i:.5f}" if i % 3 == 0 else "",
            "privateScore": "",
            "errorDescription": "bad header" if i % 3 == 2 else "",
            "teamName": "kit team",
        }
        for i in range(5)
    ]
    rows = list_submissions(SLUG)
    assert [r["ref"] for r in rows] == [500, 499, 498, 497, 496]
    assert rows[0] == {
        "ref": 500,
        "date": "2024-03-01T08:30:00.250Z",
        "description": "run 0",
        "file_name": "sub0.csv",
        "status": "COMPLETE",
        "public_score": "2.50000",
        "private_score": "",
        "error_description": "",
        "team_name": "kit team",
    }
    assert [r["status"] for r in rows] == ["COMPLETE", "PENDING", "ERROR", "COMPLETE", "PENDING"]
    assert rows[2]["error_description"] == "bad header"
    tokens = [c.body.get("pageToken") for c in server.calls("ListSubmissions")]
    assert tokens == ["", "2", "4"]


def test_an_unknown_submission_status_is_a_clear_error(server: FakeKaggle) -> None:
    server.submissions[SLUG] = [{"ref": 1, "status": "RESCORING"}]
    with pytest.raises(KaggleError) as excinfo:
        list_submissions(SLUG)
    assert "RESCORING" in one_line_error(excinfo)


def test_leaderboard_reads_every_page(server: FakeKaggle) -> None:
    server.page_size = 3
    server.leaderboards[SLUG] = [
        {"teamId": 10 + i, "teamName": f"team {i}", "submissionDate": "2024-01-05T00:00:00Z"}
        | {"score": f"{1.5 + i / 4:.3f}"}
        for i in range(7)
    ]
    rows = leaderboard(SLUG)
    assert len(rows) == 7
    assert rows[6] == {
        "team_id": 16,
        "team_name": "team 6",
        "submission_date": "2024-01-05T00:00:00.000Z",
        "score": "3.000",
    }
    assert len(server.calls("GetLeaderboard")) == 3


def test_download_leaderboard_gives_the_bom_csv(server: FakeKaggle, tmp_path: Path) -> None:
    server.leaderboards[SLUG] = [
        {"teamId": 7, "teamName": "Zoë", "submissionDate": "2024-01-05T00:00:00Z", "score": "1.9"}
    ]
    path = download_leaderboard(SLUG, tmp_path)
    assert path == tmp_path / f"{SLUG}-leaderboard.zip"
    with zipfile.ZipFile(path) as z:
        (name,) = z.namelist()
        raw = z.read(name)
    assert name.startswith(f"{SLUG}-publicleaderboard-") and name.endswith(".csv")
    assert raw.startswith(b"\xef\xbb\xbf")
    lines = raw.decode("utf-8-sig").splitlines()
    assert lines == [LEADERBOARD_HEADER, "1,7,Zoë,2024-01-05T00:00:00Z,1.9,1,"]
    assert not (tmp_path / f"{SLUG}.zip").exists()  # never clobbers the data zip's name


# -- the kaggle CLI itself -----------------------------------------------------------------------


def test_the_kaggle_cli_reaches_the_fake_server(server: FakeKaggle) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kaggle", "competitions", "files", SLUG],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "train.csv" in done.stdout and "test.csv" in done.stdout
    (call,) = server.calls("ListDataFiles")
    assert call.body["competitionName"] == SLUG
    assert call.auth == basic_auth()
