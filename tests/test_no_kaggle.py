"""Competitions without a Kaggle page (no kaggle_slug): fetch needs --from, submit and
kit run --upload keep the file without uploading, kit track has no leaderboard to follow."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from fake_kaggle import FakeKaggle, kaggle_server_fixture  # noqa: F401  (the kaggle_server fixture)
from test_fetch import TOY_PLUGIN, TOY_TOML, _toy_zip
from test_stack import TINY_NAME, one_torch_thread, tiny_competition, tiny_run  # noqa: F401

import kit.kaggle
from kit.competition import Competition, load_competition
from kit.errors import KitError
from kit.fetch import fetch
from kit.report.history import submissions_section
from kit.report.records import read_work_folder
from kit.store.manifests import SubmissionManifest
from kit.submit import make_submission
from kit.track.snapshot import take_snapshot
from kit.track.views import read_manifests

NAME = "toy"
SLUG_LINE = re.compile(r'(?m)^kaggle_slug = "[^"]*"\n')
NO_PAGE = f"{NAME} has no Kaggle page"


def without_slug(toml: str, slug_line: str = "") -> str:
    """`toml` with its kaggle_slug line replaced by `slug_line` (nothing: no slug at all)."""
    text, count = SLUG_LINE.subn(slug_line, toml)
    assert count == 1
    return text


pytestmark = pytest.mark.usefixtures("submissions")  # conftest: a fresh folder


@pytest.fixture
def no_client(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every kit.kaggle call, recorded and refused: a competition without a page makes none."""
    calls: list[str] = []

    def refuse(name: str):
        def call(*_args, **_kwargs):
            calls.append(name)
            raise AssertionError(f"kit.kaggle.{name} was called")

        return call

    names = ("download_competition_files", "submit", "list_submissions", "leaderboard")
    for name in (*names, "download_leaderboard"):
        monkeypatch.setattr(kit.kaggle, name, refuse(name))
    return calls


def make_toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slug_line: str = "") -> Competition:
    root = tmp_path / "comps" / NAME
    root.mkdir(parents=True)
    (root / "competition.toml").write_text(without_slug(TOY_TOML, slug_line))
    (root / "plugin.py").write_text(TOY_PLUGIN)
    monkeypatch.setenv("KIT_COMPETITIONS", str(root.parent))
    return load_competition(NAME)


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Competition:
    return make_toy(tmp_path, monkeypatch)


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Competition:
    """test_stack's tiny competition (fetched, folds written) with its kaggle_slug taken out."""
    comp = tiny_competition(tmp_path, monkeypatch)
    toml = comp.root / "competition.toml"
    toml.write_text(without_slug(toml.read_text()))
    return load_competition(TINY_NAME)


def one_line(result) -> str:
    assert result.code != 0 and "Traceback" not in result.err
    message = result.messages.strip()
    assert message.count("\n") == 0, message
    return message


# ------------------------------------------------------------------------- the config


@pytest.mark.parametrize("slug_line", ["", 'kaggle_slug = ""\n', 'kaggle_slug = "  "\n'])
def test_an_absent_or_empty_slug_means_no_kaggle_page(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, slug_line: str
) -> None:
    comp = make_toy(tmp_path, monkeypatch, slug_line)
    assert comp.kaggle_slug == "" and not comp.on_kaggle
    with pytest.raises(KitError, match=f"^{NO_PAGE}: why not"):
        comp.require_kaggle("why not", hint="a hint")


def test_a_slug_is_kept_and_a_non_string_slug_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    comp = make_toy(tmp_path, monkeypatch, 'kaggle_slug = " toy-comp "\n')
    assert comp.on_kaggle and comp.require_kaggle("x", hint="y") == "toy-comp"
    (comp.root / "competition.toml").write_text(without_slug(TOY_TOML, "kaggle_slug = 3\n"))
    with pytest.raises(KitError, match="kaggle_slug must be a string, not 3"):
        load_competition(NAME)


# ------------------------------------------------------------------------- fetch


def test_fetch_without_from_says_to_give_the_files(toy: Competition, cli, no_client) -> None:
    message = one_line(cli("fetch", NAME))
    assert message == (
        f"error: {NO_PAGE}: nothing to download (give its files with --from PATH, a zip or folder)"
    )
    assert no_client == [] and not toy.workspace.root.exists()  # nothing written either
    with pytest.raises(KitError, match=f"{NO_PAGE}: nothing to download"):
        fetch(toy)


def test_fetch_from_a_zip_works(toy: Competition, tmp_path: Path, cli, no_client) -> None:
    done = cli("fetch", NAME, "--from", _toy_zip(tmp_path / "toy.zip"))
    assert done.code == 0, done.err
    assert f"fetched {NAME}" in done.out and toy.workspace.train_npz.is_file()
    assert no_client == []


def test_fetch_does_not_import_the_kaggle_client(toy: Competition, cli) -> None:
    """Refused before kit.kaggle (and the client it loads lazily) is imported."""
    before = {name for name in sys.modules if name == "kaggle" or name.startswith("kaggle.")}
    one_line(cli("fetch", NAME))
    after = {name for name in sys.modules if name == "kaggle" or name.startswith("kaggle.")}
    assert after == before


# ------------------------------------------------------------------------- submit


def test_submit_keeps_the_file_and_says_there_is_nothing_to_upload(
    tiny: Competition, submissions: Path, kaggle_server: FakeKaggle, cli
) -> None:
    run = tiny_run(tiny)
    done = cli("submit", TINY_NAME, "-m", "no page")
    assert done.code == 0, done.err
    assert (
        f"not uploaded: {TINY_NAME} has no Kaggle page, so there is nothing to upload to; "
        "the file is kept"
    ) in " ".join(done.out.split())
    assert "dry run" not in done.out and run.run_id in done.out
    (manifest_path,) = (submissions / TINY_NAME).glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["uploaded"] is False and manifest["kaggle_ref"] is None
    assert manifest["dry_run"] is False and manifest["upload_error"] is None
    assert "has no Kaggle page" in manifest["upload_skipped"]
    assert manifest["kaggle_slug"] == ""
    assert Path(manifest["csv"]).is_file() and manifest_path.with_suffix(".csv").is_file()
    assert kaggle_server.calls_log == []  # no server was contacted
    read, warnings = read_manifests(submissions / TINY_NAME)  # kit track's reader takes it
    assert warnings == [] and list(read["file"]) == [manifest["file"]]
    page = submissions_section(read_work_folder(tiny))  # kit report's submissions
    assert "not uploaded: no Kaggle page" in page
    assert f"public scores: none ({TINY_NAME} has no Kaggle page)" in page


def test_make_submission_says_so_in_one_event(tiny: Competition, no_client) -> None:
    tiny_run(tiny)
    events = []
    result = make_submission(tiny, dry_run=False, on_event=events.append)
    said = [e.text for e in events if e.stage == "submit"]
    assert said == [f"not uploaded: {TINY_NAME} has no Kaggle page, so there is nothing to "
                    "upload to; the file is kept"]  # fmt: skip
    assert not result.uploaded and result.path.is_file() and no_client == []
    dry = make_submission(tiny, dry_run=True)
    assert dry.manifest.dry_run and dry.manifest.upload_skipped == result.manifest.upload_skipped


def test_an_old_submission_manifest_still_loads(tmp_path: Path) -> None:
    """Written before upload_skipped existed: loads with it None."""
    old = {
        "format": {"kind": "submission", "version": 1},
        "competition": NAME,
        "file": "a.csv",
        "csv_sha256": "0" * 64,
        "cv_score": 1.5,
        "metric": "rmse",
        "source": {"kind": "run", "id": "sp-1"},
        "uploaded": True,
        "kaggle_ref": 7,
    }
    path = tmp_path / "a.json"
    path.write_text(json.dumps(old))
    manifest = SubmissionManifest.load(path)
    assert manifest.upload_skipped is None and manifest.uploaded and manifest.kaggle_ref == 7


# ------------------------------------------------------------------------- kit run --upload


def test_kit_run_upload_warns_at_the_start_and_keeps_the_submission(
    tiny: Competition, submissions: Path, kaggle_server: FakeKaggle, cli
) -> None:
    result = cli("run", TINY_NAME, "--budget", "5s", "--epochs", "1", "--families", "sp",
                 "--upload")  # fmt: skip
    assert result.code == 0, result.err
    first = result.messages.strip().splitlines()[0]
    assert first.startswith("warning: --upload:") and "has no Kaggle page" in first
    assert "not uploaded:" in result.out and "has no Kaggle page" in result.out
    (manifest_path,) = (submissions / TINY_NAME).glob("*.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["uploaded"] is False and manifest["dry_run"] is False
    assert manifest["upload_skipped"] and Path(manifest["csv"]).is_file()
    assert kaggle_server.calls_log == []


# ------------------------------------------------------------------------- track


@pytest.mark.parametrize(
    "args",
    [(NAME,), ("snap", NAME), ("show", NAME), ("report", NAME), ("install", NAME)],
    ids=["track", "snap", "show", "report", "install"],
)
def test_track_refuses_a_competition_without_a_leaderboard(
    toy: Competition, cli, no_client, args: tuple[str, ...]
) -> None:
    message = one_line(cli("track", *args))
    assert f"{NO_PAGE}: there is no leaderboard to track" in message
    assert no_client == [] and not toy.workspace.root.exists()


def test_take_snapshot_refuses_too(toy: Competition, no_client) -> None:
    with pytest.raises(KitError, match=f"{NO_PAGE}: there is no leaderboard to track"):
        take_snapshot(toy)
    assert no_client == []
