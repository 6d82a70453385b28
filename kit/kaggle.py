"""The only module that talks to Kaggle: lazy client import, credentials, retries, error mapping.

Every public function checks credentials first, runs the client with retries (429 honouring
Retry-After, 5xx and connection errors with exponential backoff and jitter) and turns any failure
into a one-line :class:`KaggleError` that says what to do. The client's own chatter on stdout is
swallowed so that kit's output stays clean.

One file (about 460 lines) on purpose: it is the whole boundary to the kaggle client, so that
no other module imports the client or knows its wire types.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import requests

from kit.console import err_console
from kit.errors import DataError, KaggleError

T = TypeVar("T")

PAGE_SIZE = 20  # the client's own default; the largest page size Kaggle documents nowhere
SETTINGS_URL = "https://www.kaggle.com/settings"
CREDENTIALS_HELP = (
    "set KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json in $KAGGLE_CONFIG_DIR, ~/.kaggle/ "
    "or ~/.config/kaggle/, or set KAGGLE_API_TOKEN or write it to ~/.kaggle/access_token; "
    f"create a token at {SETTINGS_URL}"
)
TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)


@dataclass
class RetryPolicy:
    """How kit retries Kaggle calls. Tests swap in their own `sleep` (see `RETRY`)."""

    attempts: int = 5
    base_delay: float = 2.0  # seconds before the first retry; doubles on each retry
    max_delay: float = 60.0
    max_retry_after: float = 300.0  # a longer Retry-After fails at once: better than hanging
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random  # uniform in [0, 1)

    def backoff(self, retry: int) -> float:
        """Delay before retry number `retry` (1-based): exponential, half of it random."""
        delay = min(self.max_delay, self.base_delay * 2 ** (retry - 1))
        return delay * (0.5 + 0.5 * self.jitter())


RETRY = RetryPolicy()


# ---------------------------------------------------------------------------------------------
# Public API


def download_competition_files(slug: str, dest: Path, force: bool = False) -> Path:
    """Download the competition's zip into `dest`; return its path (``dest/<slug>.zip``).

    Without `force` the client skips the download when the local zip is as new as Kaggle's.
    """
    api = _session(slug)
    dest.mkdir(parents=True, exist_ok=True)
    with _download_errors(slug):
        _call(
            lambda: api.competition_download_files(slug, path=str(dest), force=force, quiet=True),
            slug=slug,
            action="downloading the data of",
        )
    archive = dest / f"{slug}.zip"
    if not archive.is_file():
        found = ", ".join(sorted(p.name for p in dest.iterdir())) or "nothing"
        raise KaggleError(
            f"Kaggle's download for '{slug}' is not {archive.name}",
            path=dest,
            hint=f"found {found}",
        )
    if not zipfile.is_zipfile(archive):
        raise KaggleError(
            "Kaggle's download is not a readable zip",
            path=archive,
            hint="delete it and run again with --force",
        )
    return archive


def submit(slug: str, file: Path, message: str) -> int:
    """Upload `file` as a submission with description `message`; return Kaggle's submission ref.

    Only 429 is retried (see `_call`): a submission is never sent twice.
    """
    if not file.is_file():
        raise DataError("no such submission file", path=file)
    api = _session(slug)
    output = io.StringIO()
    result = _call(
        lambda: api.competition_submit(str(file), message, slug, quiet=True),
        slug=slug,
        action="submitting to",
        submission=True,
        stdout=output,
    )
    ref = int(getattr(result, "ref", 0) or 0)
    if ref <= 0:
        said = " ".join([str(getattr(result, "message", "") or ""), output.getvalue()]).strip()
        raise KaggleError(
            f"Kaggle did not take {file.name} for '{slug}': {said or 'no reason given'}",
            hint="nothing was submitted; try again",
        )
    return ref


def _paged(slug: str, request_type: str, method: str, action: str) -> list[Any]:
    """Every item of a paged competitions call: `request_type` built for `slug`, sent by the
    client's `method` one page at a time."""
    api = _session(slug)
    types = _sdk_types()

    def page(token: str) -> Any:
        request = getattr(types, request_type)()
        request.competition_name = slug
        request.page_size = PAGE_SIZE
        request.page_token = token
        if not token and hasattr(request, "page"):
            request.page = 1  # what the client sends for a first page where the call has pages
        with api.build_kaggle_client() as kaggle:
            return getattr(kaggle.competitions.competition_api_client, method)(request)

    return _all_pages(page, slug, action)


def list_submissions(slug: str) -> list[dict[str, Any]]:
    """Every submission of yours to the competition (all pages), newest first as Kaggle sends."""
    pages = _paged(
        slug, "ApiListSubmissionsRequest", "list_submissions", "listing the submissions of"
    )
    return [_submission_row(s) for s in pages]


def leaderboard(slug: str) -> list[dict[str, Any]]:
    """The whole leaderboard (all pages): team_id, team_name, submission_date, score."""
    rows = _paged(slug, "ApiGetLeaderboardRequest", "get_leaderboard", "reading the leaderboard of")
    return [
        {
            "team_id": int(row.team_id),
            "team_name": row.team_name or "",
            "submission_date": _iso(row.submission_date),
            "score": row.score or "",
        }
        for row in rows
    ]


def download_leaderboard(slug: str, dest: Path) -> Path:
    """Download the public leaderboard zip (a UTF-8 CSV with BOM inside) to
    ``dest/<slug>-leaderboard.zip``; return that path.

    The client names it ``<slug>.zip`` like the data zip, so it lands in a temp folder first.
    """
    api = _session(slug)
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{slug}-leaderboard.zip"
    with (
        tempfile.TemporaryDirectory(dir=dest, prefix=".leaderboard-") as tmp,
        _download_errors(slug),
    ):
        _call(
            lambda: api.competition_leaderboard_download(slug, path=tmp, quiet=True),
            slug=slug,
            action="downloading the leaderboard of",
        )
        archive = Path(tmp) / f"{slug}.zip"
        if not zipfile.is_zipfile(archive):
            raise KaggleError(f"Kaggle's leaderboard download for '{slug}' is not a readable zip")
        os.replace(archive, target)
    return target


@contextmanager
def _download_errors(slug: str) -> Iterator[None]:
    """The client's download loop re-raises its last error: a short file or a disk error."""
    try:
        yield
    except (ValueError, OSError) as exc:
        raise KaggleError(
            f"downloading from Kaggle for '{slug}' failed: {exc}",
            hint="check free disk space and the network, then run again",
        ) from exc


# ---------------------------------------------------------------------------------------------
# Credentials and the client


def config_dirs() -> list[Path]:
    """Where the client looks for kaggle.json, in its order."""
    if custom := os.environ.get("KAGGLE_CONFIG_DIR"):
        return [Path(custom)]
    home = Path.home()
    xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    return [home / ".kaggle", xdg / "kaggle"]


def credentials_source() -> str | None:
    """Which credentials the client would use (env var name or file), or None if there are none."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    kaggle_home = Path.home() / ".kaggle"
    for token in (kaggle_home / "access_token", kaggle_home / "access_token.txt"):
        if _has_text(token):
            return str(token)
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    for folder in config_dirs():
        if (folder / "kaggle.json").is_file():
            return str(folder / "kaggle.json")
    if (kaggle_home / "credentials.json").is_file():
        return str(kaggle_home / "credentials.json")
    return None


def _has_text(path: Path) -> bool:
    try:
        return bool(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError):
        return False


def _no_credentials() -> KaggleError:
    return KaggleError("no Kaggle credentials found", hint=CREDENTIALS_HELP)


def _client() -> ModuleType:
    """Import the client on first use; its import prints and may exit, so contain both."""
    try:
        with redirect_stdout(io.StringIO()):
            from kaggle.api import kaggle_api_extended
    except (ImportError, SystemExit) as exc:
        raise KaggleError(
            f"cannot load the kaggle client ({exc})",
            hint="pip install 'kaggle>=2.2.4,<2.3' six",
        ) from exc
    return kaggle_api_extended


def _sdk_types() -> ModuleType:
    _client()
    from kagglesdk.competitions.types import competition_api_service

    return competition_api_service


def _session(slug: str) -> Any:
    """An authenticated KaggleApi that follows the environment as it is now."""
    if credentials_source() is None:
        raise _no_credentials()
    api = _client().KaggleApi()
    # KaggleApi reads its config folder and endpoint into class attributes when first imported;
    # read them again so a long-lived process (or a test) sees the current environment.
    api.config_dir = str(next((d for d in config_dirs() if d.is_dir()), config_dirs()[0]))
    api.config = os.path.join(api.config_dir, api.config_file)
    api.args = [a for a in api.args if a != "--local"]
    if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST":
        api.args.append("--local")
    _call(api.authenticate, slug=slug, action="signing in for")
    return api


# ---------------------------------------------------------------------------------------------
# Calls, retries and errors


def _call(
    fn: Callable[[], T],
    *,
    slug: str,
    action: str,
    submission: bool = False,
    stdout: io.StringIO | None = None,
) -> T:
    """Run one client call with retries; raise a one-line KaggleError when it finally fails.

    A `submission` is retried only on 429: after a 5xx or a broken connection it may have been
    recorded, and a blind retry could spend another of the day's submissions.
    """
    policy = RETRY
    for attempt in range(1, policy.attempts + 1):
        try:
            with redirect_stdout(stdout or io.StringIO()):
                return fn()
        except SystemExit as exc:  # the client exits when it finds no usable credentials
            raise _no_credentials() from exc
        except requests.HTTPError as exc:
            status = _status(exc)
            retryable = status == 429 or (status >= 500 and not submission)
            if not retryable or attempt == policy.attempts:
                raise _http_error(exc, status, slug, action, attempt, submission) from exc
            delay = _retry_after(exc.response) if status == 429 else None
            if delay is not None and delay > policy.max_retry_after:
                raise KaggleError(
                    f"rate limited by Kaggle, HTTP 429 while {action} '{slug}'",
                    hint=f"Kaggle asks to wait {delay:.0f} s; try again later",
                ) from exc
            reason = f"HTTP {status}"
        except TRANSIENT_ERRORS as exc:
            if submission or attempt == policy.attempts:
                raise KaggleError(
                    f"cannot reach Kaggle, {type(exc).__name__} after {attempt} attempt(s) "
                    f"while {action} '{slug}'",
                    hint="check the network and proxy settings, then try again",
                ) from exc
            delay, reason = None, type(exc).__name__
        if delay is None:
            delay = policy.backoff(attempt)
        _say_retry(reason, delay, attempt, policy.attempts)
        policy.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _say_retry(reason: str, delay: float, attempt: int, attempts: int) -> None:
    err_console.print(
        f"[yellow]Kaggle: {reason}; retrying in {delay:.1f} s (attempt {attempt + 1}/{attempts})[/]"
    )


def _status(exc: requests.HTTPError) -> int:
    """HTTP status of a client error; the client also raises for a 200 carrying {"code": 4xx}."""
    response = exc.response
    if response is None:
        return 0
    if response.status_code >= 400:
        return response.status_code
    code = _json_field(response, "code")
    return int(code) if isinstance(code, int) else response.status_code


def _server_message(exc: requests.HTTPError) -> str:
    message = _json_field(exc.response, "message") if exc.response is not None else None
    return " ".join(str(message or exc).split())[:200]


def _json_field(response: requests.Response, name: str) -> Any:
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None


def _retry_after(response: requests.Response | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), if any."""
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _http_error(
    exc: requests.HTTPError, status: int, slug: str, action: str, attempts: int, submission: bool
) -> KaggleError:
    rules = f"https://www.kaggle.com/c/{slug}/rules"
    tried = f"after {attempts} attempt(s) while {action} '{slug}'"
    if status == 401:
        return KaggleError(
            f"Kaggle rejected the credentials from {credentials_source()} with HTTP 401",
            hint=f"they are invalid or expired: create a new API token at {SETTINGS_URL}",
        )
    if status == 403:
        return KaggleError(
            f"Kaggle refused access to '{slug}' with HTTP 403",
            hint=f"accept the competition's rules at {rules}, or check the slug",
        )
    if status == 404:
        return KaggleError(
            f"no such competition '{slug}' on Kaggle, HTTP 404",
            hint="check kaggle_slug in the competition's competition.toml",
        )
    if status == 429:
        return KaggleError(f"rate limited by Kaggle, HTTP 429 {tried}", hint="try again later")
    if status >= 500:
        check = "; first check on Kaggle whether the submission arrived" if submission else ""
        return KaggleError(
            f"Kaggle server error, HTTP {status} {tried}", hint="try again later" + check
        )
    if status == 400 and submission:
        return KaggleError(
            f"Kaggle rejected the submission to '{slug}' with HTTP 400: {_server_message(exc)}",
            hint=f"the daily submission limit may be reached, or you have not joined: {rules}",
        )
    return KaggleError(f"Kaggle answered HTTP {status} {tried}: {_server_message(exc)}")


# ---------------------------------------------------------------------------------------------
# Pages and rows


def _all_pages(page: Callable[[str], Any], slug: str, action: str) -> Iterator[Any]:
    """Items of every page, following next_page_token until it is empty (or repeats)."""
    token, seen = "", {""}
    while True:
        try:
            response = _call(lambda t=token: page(t), slug=slug, action=action)
        except (KeyError, ValueError) as exc:  # e.g. a status value this client does not know
            raise KaggleError(
                f"cannot read Kaggle's answer while {action} '{slug}': {exc!r}",
                hint="the installed kaggle client may be too old for it",
            ) from exc
        yield from response.submissions
        token = response.next_page_token or ""
        if token in seen:
            return
        seen.add(token)


def _submission_row(s: Any) -> dict[str, Any]:
    return {
        "ref": int(s.ref),
        "date": _iso(s.date),
        "description": s.description or "",
        "file_name": s.file_name or "",
        "status": s.status.name,
        "public_score": s.public_score or "",
        "private_score": s.private_score or "",
        "error_description": s.error_description or "",
        "team_name": s.team_name or "",
    }


def _iso(when: datetime | None) -> str:
    """UTC ISO time as Kaggle writes it ("2024-01-01T10:00:00.123Z"); "" when absent."""
    if when is None:
        return ""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.isoformat(timespec="milliseconds") + "Z"
