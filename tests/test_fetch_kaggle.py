"""`kit fetch facial-keypoints` end to end: the REAL kaggle client against the fake server."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_kaggle import (
    FakeKaggle,
    kaggle_server_fixture,  # noqa: F401  (provides the kaggle_server fixture)
)

import kit.kaggle
from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData
from kit.kaggle import RetryPolicy
from kit.store.files import sha256_file
from kit.workspace import Workspace

COMP = "facial-keypoints"
SLUG = "facial-keypoints-detection"
N_TRAIN, N_TEST = 24, 6
ATTEMPTS = 3


@pytest.fixture(autouse=True)
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []
    policy = RetryPolicy(attempts=ATTEMPTS, base_delay=1.0, sleep=recorded.append, jitter=lambda: 1)
    monkeypatch.setattr(kit.kaggle, "RETRY", policy)
    return recorded


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """FKD's four files as the plug-in writes them, and the zip Kaggle would serve."""
    comp = load_competition(COMP)
    folder = comp.plugin.write_example(tmp_path_factory.mktemp("fkd"), comp, N_TRAIN, N_TEST)
    return folder, kaggle_zip(folder)


def kaggle_zip(folder: Path) -> bytes:
    """facial-keypoints-detection.zip as Kaggle ships it: the two big CSVs zipped inside."""

    def zipped(name: str) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(folder / name, name)
        return buf.getvalue()

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("training.zip", zipped("training.csv"))
        z.writestr("test.zip", zipped("test.csv"))
        z.write(folder / "IdLookupTable.csv", "IdLookupTable.csv")
        z.write(folder / "SampleSubmission.csv", "SampleSubmission.csv")
    return buf.getvalue()


@pytest.fixture
def comp() -> Competition:
    return load_competition(COMP)


@pytest.fixture
def server(kaggle_server: FakeKaggle, example: tuple[Path, bytes]) -> FakeKaggle:
    kaggle_server.add_competition(SLUG, example[1])
    return kaggle_server


def cache_state(ws: Workspace) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in (ws.train_npz, ws.test_npz, ws.checksums)}


def error_line(err: str, *expected: str) -> str:
    """The one error line (last on stderr, less its progress lines); any lines before it are
    retry notices."""
    assert "Traceback" not in err
    *before, last = err.strip().splitlines()
    assert last.startswith("error: ")
    assert all(line.startswith("Kaggle: ") and "retrying" in line for line in before), err
    for part in expected:
        assert part in last
    return last


def test_fetch_downloads_and_caches_the_arrays(
    server: FakeKaggle, cli, comp: Competition, example: tuple[Path, bytes]
) -> None:
    result = cli("fetch", COMP)
    assert result.code == 0, result.err
    assert f"fetched {COMP}" in result.out
    (call,) = server.calls("DownloadDataFiles")
    assert call.body == {"competitionName": SLUG}

    folder, _ = example
    written = pd.read_csv(folder / "training.csv")
    train = KeypointData.load(comp.workspace.train_npz)
    assert train.images.shape == (N_TRAIN, 96, 96) and train.images.dtype == np.uint8
    assert train.keypoints.shape == (N_TRAIN, 15, 2)
    expected_points = written.drop(columns="Image").to_numpy(np.float32).reshape(N_TRAIN, 15, 2)
    np.testing.assert_allclose(train.keypoints, expected_points, atol=1e-5)  # NaNs where blank
    expected_images = np.stack([np.array(s.split(), np.uint8) for s in written["Image"]])
    np.testing.assert_array_equal(train.images.reshape(N_TRAIN, -1), expected_images)
    np.testing.assert_array_equal(train.ids, np.arange(N_TRAIN))

    test = KeypointData.load(comp.workspace.test_npz)
    assert test.images.shape == (N_TEST, 96, 96)
    assert np.isnan(test.keypoints).all()
    np.testing.assert_array_equal(test.ids, pd.read_csv(folder / "test.csv")["ImageId"])


def test_second_fetch_is_a_no_op(server: FakeKaggle, cli, comp: Competition) -> None:
    assert cli("fetch", COMP).code == 0
    before = cache_state(comp.workspace)
    again = cli("fetch", COMP)
    assert again.code == 0, again.err
    assert "up to date" in again.out
    assert cache_state(comp.workspace) == before


def test_a_training_zip_carrying_a_second_test_csv_is_refused(
    kaggle_server: FakeKaggle, cli, comp: Competition, example: tuple[Path, bytes]
) -> None:
    """The input battery's case: the inner training.zip also holds a test.csv, which replaced
    the real one. The error names the downloaded file, not kit's staging copy of it."""
    folder, _ = example
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(
            "training.zip", zip_of(training=folder / "training.csv", test=folder / "test.csv")
        )
        z.writestr("test.zip", zip_of(test=folder / "test.csv"))
        z.write(folder / "IdLookupTable.csv", "IdLookupTable.csv")
        z.write(folder / "SampleSubmission.csv", "SampleSubmission.csv")
    kaggle_server.add_competition(SLUG, buf.getvalue())
    result = cli("fetch", COMP)
    assert result.code == 2 and len(result.messages.strip().splitlines()) == 1
    downloaded = comp.workspace.downloads / f"{SLUG}.zip"
    assert f"training.zip in {downloaded}: ambiguous members" in result.err
    assert "training.csv, test.csv" in result.err and ".raw-staging" not in result.err
    assert not comp.workspace.train_npz.exists()


def zip_of(**files: Path) -> bytes:
    """A zip of `files` under their own names (the keywords only make them unique)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path in files.values():
            z.write(path, path.name)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("status", "times", "expected"),
    [
        (401, 1, ["HTTP 401", "credentials", "kaggle.com/settings"]),
        (403, 1, ["HTTP 403", f"https://www.kaggle.com/c/{SLUG}/rules"]),
        (404, 1, [f"no such competition '{SLUG}'"]),
        (500, 10, [f"HTTP 500 after {ATTEMPTS} attempt(s)", "try again later"]),
    ],
)
def test_kaggle_errors_fail_cleanly_and_keep_the_cache(
    server: FakeKaggle, cli, comp: Competition, status: int, times: int, expected: list[str]
) -> None:
    assert cli("fetch", COMP).code == 0
    before = cache_state(comp.workspace)
    server.fail("DownloadDataFiles", status, times=times)
    result = cli("fetch", COMP, "--force")
    assert result.code != 0
    error_line(result.messages, *expected)
    assert cache_state(comp.workspace) == before


def test_missing_credentials_fail_cleanly_and_keep_the_cache(
    server: FakeKaggle, cli, comp: Competition, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("fetch", COMP).code == 0
    before = cache_state(comp.workspace)
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    calls = len(server.calls_log)
    result = cli("fetch", COMP)
    assert result.code != 0
    error_line(result.messages, "no Kaggle credentials found", "KAGGLE_USERNAME", "kaggle.json")
    assert len(server.calls_log) == calls  # nothing was sent
    assert cache_state(comp.workspace) == before


def test_rate_limit_then_success(
    server: FakeKaggle, cli, comp: Competition, sleeps: list[float]
) -> None:
    server.fail("DownloadDataFiles", 429, retry_after="12")
    result = cli("fetch", COMP)
    assert result.code == 0, result.err
    assert sleeps == [12.0]
    assert len(server.calls("DownloadDataFiles")) == 2
    assert len(KeypointData.load(comp.workspace.train_npz)) == N_TRAIN


def test_bad_data_from_kaggle_keeps_the_cache(
    server: FakeKaggle, cli, comp: Competition, example: tuple[Path, bytes], tmp_path: Path
) -> None:
    assert cli("fetch", COMP).code == 0
    before = cache_state(comp.workspace)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("training.csv", "test.csv", "IdLookupTable.csv", "SampleSubmission.csv"):
        (broken / name).write_bytes((example[0] / name).read_bytes())
    lines = (broken / "training.csv").read_text().splitlines()
    lines[3] = lines[3].replace(" ", " x", 1)  # a bad pixel in data row 3
    (broken / "training.csv").write_text("\n".join(lines) + "\n")
    server.add_competition(SLUG, kaggle_zip(broken))

    result = cli("fetch", COMP, "--force")
    assert result.code != 0
    error_line(result.messages, "training.csv")
    assert cache_state(comp.workspace) == before
