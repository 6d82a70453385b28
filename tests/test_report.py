"""kit report: one self-contained HTML page of a tiny work folder (two runs, a stack, a kit run
plan, two Optuna studies, a dry-run submission with a tracked public score), what each section
says, what it says when there is nothing to show, the CLI's errors, and the page in headless
Chromium (when installed)."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from PIL import Image
from test_stack import TINY_NAME, TINY_SP, one_thread, tiny_competition

import kit.training.runs
from kit.competition import PATH_ENV, Competition
from kit.planning.outcome import RunOutcome
from kit.planning.planner import Plan, PlannedRun
from kit.planning.stage import save_plan
from kit.report import build_report
from kit.report.records import read_work_folder
from kit.stack import stack
from kit.store import RunResult
from kit.submit import make_submission
from kit.track.store import TrackStore
from kit.training.runs import train_run
from kit.tuning import default_storage, open_storage
from kit.workspace import SUBMISSIONS_ENV, WORK_ENV

PUBLIC = "1.23456"  # the tracked public score of the submission


@dataclass(frozen=True)
class Built:
    """The tiny work folder, built once for this module."""

    root: Path
    comp: Competition
    curved: RunResult  # trained with pictures: curves.png and worst.png on disk
    plain: RunResult  # trained without: the report draws them
    stack_id: str
    submission: str  # the CSV's file name


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("report")
    with pytest.MonkeyPatch.context() as mp:
        _environment(mp, root)
        mp.setattr(kit.training.runs, "configure_cpu_threads", one_thread)
        comp = tiny_competition(root, mp)
        curved = train_run(comp, "sp", TINY_SP, epochs=2, pictures=True, device="cpu")
        plain = train_run(
            comp, "sp", {**TINY_SP, "lr": 0.03}, epochs=1, pictures=False, device="cpu", seed=1
        )
        stacked = stack(comp, per_family=2)
        submission = make_submission(comp, stacked.stack_id)
        write_plan(comp, curved, plain)
        write_studies(comp)
        track_public_score(comp, submission.path.name)
    return Built(root, comp, curved, plain, stacked.stack_id, submission.path.name)


def _environment(mp: pytest.MonkeyPatch, root: Path) -> None:
    mp.setenv(WORK_ENV, str(root / "work"))
    mp.setenv(SUBMISSIONS_ENV, str(root / "submissions"))
    mp.setenv(PATH_ENV, str(root / "competitions"))


@pytest.fixture
def tiny(built: Built, monkeypatch: pytest.MonkeyPatch) -> Competition:
    """The built competition, found by name (the CLI) and in its own work folder."""
    _environment(monkeypatch, built.root)
    return built.comp


def write_plan(comp: Competition, curved: RunResult, plain: RunResult) -> None:
    """plan.json as kit run writes it: two runs trained, the third skipped for time."""
    runs = (
        PlannedRun("sp-a", "sp", {"hidden": 16}, 2, 0, 30.0, folds=3),
        PlannedRun("sp-b", "sp", {"hidden": 16, "lr": 0.03}, 1, 1, 12.0, folds=3),
        PlannedRun("lenet-c", "lenet", {}, 4, 0, 50.0, folds=3),
    )
    plan = Plan(folds=3, seconds=100.0, runs=runs, stack_seconds=8.0)
    done = [(curved, 41.5, ""), (plain, 9.0, "2 fewer epochs (time ran short)"), (None, 0.0, "")]
    outcome = [
        RunOutcome.of(planned, run, seconds, note or ("" if run else "skipped: 3 s were left"))
        for planned, (run, seconds, note) in zip(runs, done, strict=True)
    ]
    save_plan(comp, plan, outcome, budget=120.0)


def write_studies(comp: Competition) -> None:
    """An sp study whose score follows lr alone (hidden is noise), and a lenet study too
    short for importance."""
    rdb = open_storage(default_storage(comp))
    rng = np.random.default_rng(0)
    space = {"lr": FloatDistribution(1e-3, 1e-1, log=True), "hidden": IntDistribution(8, 64)}
    sp = optuna.create_study(study_name=f"{comp.name}/sp", storage=rdb)
    for lr in np.geomspace(1e-3, 1e-1, 24):
        params = {"lr": float(lr), "hidden": int(rng.integers(8, 65))}
        value = 4.0 + float(np.log10(lr))  # 1.0 at lr = 0.001, the first trial
        sp.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=value))
    lenet = optuna.create_study(study_name=f"{comp.name}/lenet", storage=rdb)
    for value in (2.0, 1.5):
        params = {"lr": 0.01, "hidden": 16}
        lenet.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=value))


def track_public_score(comp: Competition, file_name: str) -> None:
    """A tracking snapshot in which Kaggle scored the (dry-run) submission's file."""
    row = {
        "ref": 555,
        "date": "2024-03-01T10:00:00.000Z",
        "description": "kit",
        "file_name": file_name,
        "status": "COMPLETE",
        "public_score": PUBLIC,
        "private_score": "",
        "error_description": "",
    }
    with TrackStore.for_workspace(comp.workspace.root) as store:
        store.record(datetime(2024, 3, 1, 12, tzinfo=UTC), [], [row], "api")


def section_of(page: str, key: str) -> str:
    """The HTML of one section of the page."""
    found = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert found, f"no section {key}"
    return found.group(1)


def images_of(html: str) -> dict[str, bytes]:
    """alt text -> the PNG's bytes, of every embedded image."""
    pairs = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', html)
    return {alt: base64.b64decode(data) for alt, data in pairs}


@pytest.fixture(scope="module")
def page(built: Built) -> str:
    """The report of the built work folder, at its default place."""
    with pytest.MonkeyPatch.context() as mp:
        _environment(mp, built.root)
        return build_report(built.comp).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------- tests


def test_report_names_every_run_and_the_stack(page: str, built: Built, tiny: Competition) -> None:
    assert (tiny.workspace.root / "report.html").is_file()
    runs = section_of(page, "runs")
    for run in (built.curved, built.plain):
        assert run.run_id in runs
        assert f"{run.cv_score:.4f}" in runs
    assert "lr=0.03" in runs  # the settings that differ from the family's defaults
    keypoints = section_of(page, "keypoints")
    assert all(name in keypoints for name in tiny.keypoint_names)
    stacked = section_of(page, "stack")
    manifest = read_work_folder(tiny).stacks[0].manifest
    assert built.stack_id in stacked
    picks = list(manifest.picks.values())
    for method in set(picks):
        assert f"{method} for {picks.count(method)} keypoint" in stacked
    assert f"ridge weight {built.curved.run_id}" in stacked
    assert not re.search(r"(src|href)=\"(https?:|//|file:)", page)  # nothing fetched
    assert "<script" not in page


def test_pictures_are_the_runs_own_or_drawn(page: str, built: Built) -> None:
    pictures = images_of(page)
    curved, plain = built.curved, built.plain
    assert (
        pictures[f"learning curves of {curved.run_id}"] == (curved.path / "curves.png").read_bytes()
    )
    assert (
        pictures[f"worst out-of-fold faces of run {curved.run_id}"]
        == (curved.path / "worst.png").read_bytes()
    )
    assert not (plain.path / "curves.png").exists()  # drawn into the page, not the run folder
    for alt in (
        f"learning curves of {plain.run_id}",
        f"worst out-of-fold faces of run {plain.run_id}",
        f"worst out-of-fold faces of stack {built.stack_id}",
        "tuning trials over time",
        "plan against what happened",
        "CV against public score",
    ):
        with Image.open(io.BytesIO(pictures[alt])) as image:
            pixels = np.asarray(image.convert("L"), dtype=float)
        assert pixels.std() > 10, alt  # a picture, not a blank canvas


def test_tuning_plan_and_submissions(page: str, built: Built) -> None:
    tuning = section_of(page, "tuning")
    assert "sp: 24 trials (24 complete); best fold-0 score 1.0000 (trial 0)" in tuning
    assert "<b>lenet</b>: 2 complete trial(s): too few for parameter importance" in tuning
    params = re.findall(r"<tr><td>(\w+)</td><td><span class='bar'", tuning)
    assert params == ["lr", "hidden"]  # the score follows lr alone

    plan = section_of(page, "plan")
    assert "a budget of 120 s" in plan and "2 trained" in plan
    for name in ("sp-a", "sp-b", "lenet-c"):
        assert f"<td>{name}</td>" in plan
    assert built.plain.run_id in plan and "2 fewer epochs (time ran short)" in plan
    assert "skipped: 3 s were left" in plan

    subs = section_of(page, "submissions")
    row = re.search(rf"<tr>(?:(?!</tr>).)*{re.escape(built.submission)}.*?</tr>", subs)
    assert row, subs
    assert f"stack {built.stack_id}" in row.group(0)
    assert f">{float(PUBLIC):.5f}<" in row.group(0)  # beside its CV
    assert "not tracked" not in subs


def test_empty_sections_say_so_in_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kit.training.runs, "configure_cpu_threads", one_thread)
    monkeypatch.setenv(SUBMISSIONS_ENV, str(tmp_path / "submissions"))
    comp = tiny_competition(tmp_path, monkeypatch)
    run = train_run(comp, "sp", TINY_SP, epochs=1, folds=1, pictures=False, device="cpu")
    page = build_report(comp, tmp_path / "out" / "page.html").read_text(encoding="utf-8")
    assert run.run_id in section_of(page, "runs")  # a tuning trial: fold 0 of 3
    assert "trained only some folds" in page
    for key, line in (
        ("keypoints", "no complete run or stack: nothing scored per keypoint"),
        ("stack", "no stack in this work folder"),
        ("curves", "no complete run: no learning curves"),
        ("tuning", "no tuning studies in this work folder"),
        ("plan", "no kit run plan in this work folder"),
        ("submissions", "no submission kept for this competition"),
    ):
        assert f'<p class="none">{line}' in section_of(page, key)


def test_cli_writes_the_page_and_refuses_bad_input(
    tiny: Competition, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "mine.html"
    done = cli("report", TINY_NAME, "--out", out)
    assert done.code == 0, done.err
    assert out.is_file() and str(out) in done.out

    unknown = cli("report", "no-such-competition")
    assert unknown.code == 1 and "unknown competition 'no-such-competition'" in unknown.err
    assert len(unknown.err.strip().splitlines()) == 1

    monkeypatch.setenv(WORK_ENV, str(tmp_path / "empty"))
    missing = cli("report", TINY_NAME)
    assert missing.code == 1 and "no work folder for tiny-fkd" in missing.err
    demo = cli("report", "demo")  # kit demo's competition, which has no folder of its own
    assert demo.code == 1 and "no work folder for demo" in demo.err
    (tmp_path / "empty" / TINY_NAME).mkdir(parents=True)
    monkeypatch.setenv(SUBMISSIONS_ENV, str(tmp_path / "none"))
    empty = cli("report", TINY_NAME)
    assert empty.code == 1 and "nothing to report for tiny-fkd" in empty.err
    assert len(empty.err.strip().splitlines()) == 1


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
        page.resolve().as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_report_renders_in_headless_chromium(page: str, built: Built, tmp_path: Path) -> None:
    path = built.root / "work" / TINY_NAME / "report.html"  # the page fixture's
    assert path.read_text(encoding="utf-8") == page
    shot = tmp_path / "shot.png"
    done = chromium(path, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600")
    assert shot.is_file(), done.stderr[-2000:]
    with Image.open(shot) as image:
        assert image.size == (1200, 1600)
        pixels = np.asarray(image.convert("RGB"), dtype=float)
    assert pixels.std() > 20  # not a blank page
    assert (pixels.mean(axis=2) < 200).mean() > 0.01  # text and tables in view
    dom = chromium(path, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in (built.curved.run_id, built.plain.run_id, built.stack_id, built.submission):
        assert name in dom.stdout
