"""A fake Kaggle API server that the REAL kaggle client can talk to.

The client reaches it through ``KAGGLE_API_ENVIRONMENT=LOCALHOST`` (endpoint ``http://localhost``)
and ``HTTP_PROXY=http://127.0.0.1:<port>``, so requests arrive in absolute form
(``POST http://localhost/api/v1/competitions.CompetitionApiService/ListSubmissions``).

Use the ``kaggle_server`` fixture (import ``kaggle_server_fixture`` into a test module), or
``with FakeKaggle() as server:`` plus :func:`client_env` by hand::

    server.add_competition("my-comp", zip_bytes)
    server.fail("DownloadDataFiles", 429, times=2, retry_after="3")
    ... run kit / the kaggle client ...
    server.calls("DownloadDataFiles")        # what the client sent
    server.received[ref]                      # bytes of a submitted file
"""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

API_PREFIX = "/api/v1/competitions.CompetitionApiService/"
USERNAME, KEY = "kit-tester", "0123456789abcdef"
LAST_MODIFIED = "Mon, 01 Jan 2024 10:00:00 GMT"
LEADERBOARD_HEADER = (
    "Rank,TeamId,TeamName,LastSubmissionDate,Score,SubmissionCount,TeamMemberUserNames"
)


@dataclass
class Failure:
    status: int
    message: str = ""
    retry_after: str | None = None


@dataclass
class Call:
    """One request as the server saw it. `method` is the RPC name, "File" or "Upload"."""

    method: str
    body: Any  # parsed JSON for RPCs, the URL path for "File", (token, bytes) for "Upload"
    auth: str | None


@dataclass
class FakeKaggle:
    competitions: dict[str, bytes] = field(default_factory=dict)  # slug -> data zip
    submissions: dict[str, list[dict]] = field(default_factory=dict)  # slug -> camelCase rows
    leaderboards: dict[str, list[dict]] = field(default_factory=dict)  # slug -> camelCase rows
    page_size: int = 1000  # server-side cap on rows per page (set small to force paging)
    calls_log: list[Call] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)  # upload token -> bytes
    received: dict[int, bytes] = field(default_factory=dict)  # submission ref -> file bytes

    def __post_init__(self) -> None:
        self._failures: dict[str, list[Failure]] = {}
        self._pending: dict[str, tuple[str, str]] = {}  # upload token -> (slug, file name)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- configuration ----------------------------------------------------------------------
    def add_competition(self, slug: str, data: bytes) -> None:
        self.competitions[slug] = data
        self.submissions.setdefault(slug, [])
        self.leaderboards.setdefault(slug, [])

    def fail(
        self,
        method: str,
        status: int,
        times: int = 1,
        message: str = "",
        retry_after: str | None = None,
    ) -> None:
        """Answer the next `times` calls of `method` with `status`."""
        self._failures.setdefault(method, []).extend(
            [Failure(status, message, retry_after)] * times
        )

    def calls(self, method: str) -> list[Call]:
        return [c for c in self.calls_log if c.method == method]

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    def __enter__(self) -> FakeKaggle:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._httpd is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    # -- request handling (called from server threads) -----------------------------------------
    def handle(self, method: str, body: Any, auth: str | None, base: str) -> tuple[int, dict, Any]:
        """Return (status, headers, payload); a dict payload is sent as JSON, bytes as is."""
        with self._lock:
            self.calls_log.append(Call(method, body, auth))
            queue = self._failures.get(method)
            failure = queue.pop(0) if queue else None
        if failure is not None:
            headers = {"Retry-After": failure.retry_after} if failure.retry_after else {}
            return failure.status, headers, {"code": failure.status, "message": failure.message}
        if method == "File":
            return self._serve_file(body)
        if method == "Upload":
            return self._receive_upload(body)
        slug = body.get("competitionName", "")
        if slug not in self.competitions:
            return 404, {}, {"code": 404, "message": f"Competition '{slug}' not found"}
        handler = getattr(self, f"_rpc_{method}", None)
        if handler is None:
            return 404, {}, {"code": 404, "message": f"unknown method {method}"}
        return handler(slug, body, base)

    def _serve_file(self, path: str) -> tuple[int, dict, Any]:
        """/files/<slug>.zip: the data zip; /files/<slug>/<name>: one member of it."""
        parts = path.strip("/").split("/")
        slug = parts[1].removesuffix(".zip") if len(parts) > 1 else ""
        if slug not in self.competitions:
            return 404, {}, {"code": 404, "message": f"no file {path}"}
        data = self.competitions[slug]
        if len(parts) == 3:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                if parts[2] not in z.namelist():
                    return 404, {}, {"code": 404, "message": f"no file {path}"}
                data = z.read(parts[2])
        return 200, {"Content-Type": "application/zip", "Last-Modified": LAST_MODIFIED}, data

    def _receive_upload(self, body: tuple[str, bytes]) -> tuple[int, dict, Any]:
        token, data = body
        with self._lock:
            self.uploads[token] = data
        return 200, {}, {}

    def _rpc_ListDataFiles(self, slug: str, body: dict, base: str) -> tuple[int, dict, Any]:
        with zipfile.ZipFile(io.BytesIO(self.competitions[slug])) as z:
            files = [
                {
                    "name": i.filename,
                    "totalBytes": i.file_size,
                    "creationDate": "2024-01-01T10:00:00Z",
                }
                for i in z.infolist()
            ]
        return 200, {}, {"files": files, "nextPageToken": ""}

    def _rpc_DownloadDataFiles(self, slug: str, body: dict, base: str) -> tuple[int, dict, Any]:
        return 302, {"Location": f"{base}/files/{slug}.zip"}, b""

    def _rpc_DownloadDataFile(self, slug: str, body: dict, base: str) -> tuple[int, dict, Any]:
        return 302, {"Location": f"{base}/files/{slug}/{body.get('fileName', '')}"}, b""

    def _rpc_DownloadLeaderboard(self, slug: str, body: dict, base: str) -> tuple[int, dict, Any]:
        return 200, {"Content-Type": "application/zip"}, self.leaderboard_zip(slug)

    def _rpc_ListSubmissions(self, slug: str, body: dict, base: str) -> tuple[int, dict, Any]:
        return 200, {}, self._page(self.submissions[slug], body)

    def _rpc_GetLeaderboard(self, slug: str, body: dict, base: str) -> tuple[int, dict, Any]:
        return 200, {}, self._page(self.leaderboards[slug], body)

    def _rpc_StartSubmissionUpload(self, slug: str, body: dict, base: str) -> tuple[int, dict, Any]:
        with self._lock:
            token = f"blob-{len(self._pending) + 1}"
            self._pending[token] = (slug, body.get("fileName", ""))
        return 200, {}, {"token": token, "createUrl": f"{base}/upload/{token}"}

    def _rpc_CreateSubmission(self, slug: str, body: dict, base: str) -> tuple[int, dict, Any]:
        token = body.get("blobFileTokens", "")
        if token not in self.uploads:
            return 400, {}, {"code": 400, "message": f"unknown blob token '{token}'"}
        with self._lock:
            ref = 1000 + sum(len(rows) for rows in self.submissions.values())
            self.received[ref] = self.uploads[token]
            row = {
                "ref": ref,
                "date": "2024-01-02T10:00:00.000Z",
                "description": body.get("submissionDescription", ""),
                "fileName": self._pending[token][1],
                "status": "PENDING",
                "publicScore": "",
                "privateScore": "",
            }
            self.submissions[slug].insert(0, row)
        return 200, {}, {"message": "Successfully submitted", "ref": ref}

    def _page(self, rows: list[dict], body: dict) -> dict:
        start = int(body.get("pageToken") or 0)
        size = min(int(body.get("pageSize") or 20), self.page_size)
        end = start + size
        return {
            "submissions": rows[start:end],
            "nextPageToken": str(end) if end < len(rows) else "",
        }

    def leaderboard_zip(self, slug: str) -> bytes:
        """The public leaderboard as Kaggle serves it: one UTF-8-with-BOM CSV in a zip."""
        lines = [LEADERBOARD_HEADER] + [
            f"{rank},{r['teamId']},{r['teamName']},{r['submissionDate']},{r['score']},1,"
            for rank, r in enumerate(self.leaderboards.get(slug, []), start=1)
        ]
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            name = f"{slug}-publicleaderboard-2024-01-03T10:00:00.csv"
            z.writestr(name, ("\n".join(lines) + "\n").encode("utf-8-sig"))
        return buf.getvalue()


def _handler_for(server: FakeKaggle) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            path = urlsplit(self.path).path
            if not path.startswith(API_PREFIX):
                self._send(404, {}, {"code": 404, "message": f"no route {path}"})
                return
            method, body = path.removeprefix(API_PREFIX), json.loads(self._body() or b"{}")
            self._send(*server.handle(method, body, self._auth(), self._base()))

        def do_GET(self) -> None:
            self._send(*server.handle("File", urlsplit(self.path).path, self._auth(), self._base()))

        def do_PUT(self) -> None:
            token = urlsplit(self.path).path.rsplit("/", 1)[-1]
            self._send(*server.handle("Upload", (token, self._body()), self._auth(), self._base()))

        def _auth(self) -> str | None:
            return self.headers.get("Authorization")

        def _base(self) -> str:
            return f"http://{self.headers.get('Host', 'localhost')}"

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", ""):
                chunks = []
                while size := int(self.rfile.readline().strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, headers: dict, payload: Any) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            if not isinstance(payload, bytes):
                self.send_header("Content-Type", "application/json")
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

    return Handler


def basic_auth(username: str = USERNAME, key: str = KEY) -> str:
    """The Authorization header the client sends for legacy (username, key) credentials."""
    return "Basic " + base64.b64encode(f"{username}:{key}".encode()).decode()


def client_env(monkeypatch: pytest.MonkeyPatch, home: Path, port: int) -> None:
    """Point the kaggle client at the fake server, with fake credentials and an isolated HOME."""
    for name in [n for n in os.environ if n.startswith("KAGGLE_")]:
        monkeypatch.delenv(name)  # the client reads every KAGGLE_* variable into its config
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HOME", str(home))  # a real ~/.kaggle/access_token would override keys
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{port}")


@pytest.fixture(name="kaggle_server")
def kaggle_server_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKaggle]:
    """A running FakeKaggle with the client's environment pointed at it; stopped on teardown."""
    with FakeKaggle() as server:
        client_env(monkeypatch, tmp_path / "home", server.port)
        yield server
