"""The fetch stage on a toy third competition: plug-in loading, safe unpacking, caching, no-op."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kit.competition import load_competition
from kit.data.arrays import KeypointData
from kit.data.unpack import extract_zip
from kit.errors import DataError
from kit.fetch import fetch

TOY_TOML = """
name = "toy"
kaggle_slug = "toy-comp"
input_size = 8
metric = "rmse"
keypoints = ["left_eye", "right_eye", "nose"]
flip_pairs = [["left_eye", "right_eye"]]
[subsets]
eyes = ["left_eye", "right_eye"]
"""

# A whole competition in one small module: rows of "x1 y1 x2 y2 x3 y3 | 64 pixels".
TOY_PLUGIN = """
from pathlib import Path
import numpy as np
from kit.data.arrays import KeypointData
from kit.errors import DataError

def required_files(comp):
    return ["train.txt", "test.txt"]

def _read(path, labelled):
    rows = [line.split("|") for line in path.read_text().splitlines() if line.strip()]
    try:
        pts = np.array([[float(v) for v in r[0].split()] for r in rows], np.float32)
        img = np.array([[int(v) for v in r[1].split()] for r in rows], np.uint8)
    except ValueError as exc:
        raise DataError(f"bad value ({exc})", path=path) from exc
    n = len(rows)
    kp = pts.reshape(n, 3, 2) if labelled else np.full((n, 3, 2), np.nan, np.float32)
    ids = np.arange(n)
    return KeypointData.whole_images(img.reshape(n, 8, 8), kp, ids)

def load(raw_dir, comp):
    return _read(raw_dir / "train.txt", True), _read(raw_dir / "test.txt", False)
"""


def _line(rng: np.random.Generator) -> str:
    pts = " ".join(f"{v:.2f}" for v in rng.uniform(0, 8, 6))
    return pts + "|" + " ".join(str(v) for v in rng.integers(0, 256, 64))


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    root = tmp_path / "comps" / "toy"
    root.mkdir(parents=True)
    (root / "competition.toml").write_text(TOY_TOML)
    (root / "plugin.py").write_text(TOY_PLUGIN)
    monkeypatch.setenv("KIT_COMPETITIONS", str(root.parent))
    return load_competition("toy")


def _zipped(members: dict[str, str | bytes]) -> bytes:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return inner.getvalue()


def _toy_zip(
    path: Path,
    n_train: int = 5,
    seed: int = 0,
    extra: dict[str, bytes] | None = None,
    inner_extra: dict[str, str] | None = None,
):
    rng = np.random.default_rng(seed)
    train = "\n".join(_line(rng) for _ in range(n_train))
    inner = _zipped({"train.txt": train, **(inner_extra or {})})  # as Kaggle ships training.zip
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("train.zip", inner)
        zf.writestr("test.txt", "\n".join(_line(rng) for _ in range(3)))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def test_third_competition_is_a_plugin_and_fetch_caches_it(toy, tmp_path):
    assert toy.keypoint_names == ("left_eye", "right_eye", "nose")
    assert toy.flip_permutation() == [1, 0, 2]
    assert toy.subset_indices("eyes") == [0, 1]
    result = fetch(toy, _toy_zip(tmp_path / "toy.zip"))
    assert (result.status, result.train_rows, result.test_rows) == ("fetched", 5, 3)
    train = KeypointData.load(toy.workspace.train_npz)
    assert train.images.shape == (5, 8, 8) and train.images.dtype == np.uint8
    assert train.keypoints.shape == (5, 3, 2) and np.isfinite(train.keypoints).all()
    assert (toy.workspace.raw / "train.txt").is_file()  # the nested zip was unpacked
    assert not (toy.workspace.raw / "train.zip").exists()
    assert fetch(toy, tmp_path / "toy.zip").status == "up to date"
    assert fetch(toy, tmp_path / "toy.zip", force=True).status == "fetched"


def test_changed_source_refetches_and_damaged_cache_is_rebuilt(toy, tmp_path):
    fetch(toy, _toy_zip(tmp_path / "a.zip", n_train=5))
    assert fetch(toy, _toy_zip(tmp_path / "a.zip", n_train=7)).train_rows == 7
    toy.workspace.train_npz.write_bytes(b"damaged")
    assert fetch(toy, tmp_path / "a.zip").status == "fetched"


def test_folder_source(toy, tmp_path):
    folder = tmp_path / "src"
    extract_zip(_toy_zip(tmp_path / "toy.zip"), folder)
    assert fetch(toy, folder).train_rows == 5
    assert fetch(toy, folder).status == "up to date"


def test_bad_parse_keeps_previous_cache(toy, tmp_path, cli):
    fetch(toy, _toy_zip(tmp_path / "good.zip"))
    before = toy.workspace.train_npz.read_bytes()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("train.txt", "1 2 3 4 5 abc|0\n")
        zf.writestr("test.txt", "")
    res = cli("fetch", "toy", "--from", bad)
    assert res.code != 0 and "Traceback" not in res.err
    assert res.messages.strip().count("\n") == 0 and f"train.txt in {bad}: bad value" in res.err
    assert ".raw-staging" not in res.err  # the plug-in named its staging copy; kit names yours
    assert toy.workspace.train_npz.read_bytes() == before
    assert (toy.workspace.raw / "train.txt").is_file()
    assert fetch(toy, tmp_path / "good.zip").status == "up to date"


def test_missing_required_file_and_missing_source(toy, tmp_path, cli):
    partial = tmp_path / "partial.zip"
    with zipfile.ZipFile(partial, "w") as zf:
        zf.writestr("test.txt", "")
    res = cli("fetch", "toy", "--from", partial)
    assert res.code == DataError.exit_code and "missing train.txt" in res.err
    res = cli("fetch", "toy", "--from", tmp_path / "nowhere.zip")
    assert res.code != 0 and "nowhere.zip: no such file or folder" in res.err


def test_truncated_zip_is_a_one_line_error(toy, tmp_path, cli):
    good = _toy_zip(tmp_path / "good.zip", n_train=50)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    res = cli("fetch", "toy", "--from", cut)
    assert res.code != 0 and "Traceback" not in res.err
    assert "cut.zip: not a valid zip" in res.err and "truncated" in res.err


def one_line_error(res) -> str:
    assert res.code == DataError.exit_code and "Traceback" not in res.err
    assert res.messages.strip().count("\n") == 0 and ".raw-staging" not in res.err
    return res.messages


def test_a_nested_zip_with_a_second_file_is_refused_and_the_cache_kept(toy, tmp_path, cli):
    fetch(toy, _toy_zip(tmp_path / "good.zip"))
    before = toy.workspace.test_npz.read_bytes()
    two = _toy_zip(tmp_path / "two.zip", inner_extra={"test.txt": "1 2|3\n"})
    err = one_line_error(cli("fetch", "toy", "--from", two))
    assert f"train.zip in {two}: ambiguous members" in err
    assert "train.txt, test.txt" in err and "rezip it with train.txt alone" in err
    assert toy.workspace.test_npz.read_bytes() == before  # the real test.txt is still the one


def test_a_nested_zip_that_would_replace_another_file_is_refused(toy, tmp_path, cli):
    source = tmp_path / "src"
    extract_zip(_toy_zip(tmp_path / "toy.zip"), source)
    (source / "data.zip").write_bytes(_zipped({"notes.txt": "x", "test.txt": "1 2|3\n"}))
    err = one_line_error(cli("fetch", "toy", "--from", source))
    assert f"{source / 'data.zip'}: ambiguous members: its test.txt would replace" in err
    assert "(members: notes.txt, test.txt)" in err


def test_a_folder_with_a_zip_and_its_own_unpacked_file_is_fine(toy, tmp_path):
    source = tmp_path / "src"
    extract_zip(_toy_zip(tmp_path / "toy.zip"), source)
    extract_zip(source / "train.zip", source)  # unpacked beside the zip, which stays
    assert fetch(toy, source).train_rows == 5  # the same train.txt twice is no conflict


def test_a_zip_holding_one_name_twice_is_refused(tmp_path):
    archive = tmp_path / "twice.zip"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("test.csv", "a")
        zf.writestr("test.csv", "b")
    with pytest.raises(DataError, match=r"ambiguous members: test\.csv and test\.csv"):
        extract_zip(archive, tmp_path / "out")
    cased = tmp_path / "cased.zip"
    cased.write_bytes(_zipped({"Train.csv": "a", "train.csv": "b"}))
    with pytest.raises(DataError, match=r"Train\.csv and train\.csv unpack to the same file"):
        extract_zip(cased, tmp_path / "out")


def test_a_corrupt_nested_zip_is_named_as_the_user_knows_it(toy, tmp_path, cli):
    archive = tmp_path / "comp.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("train.zip", b"PK\x03\x04 not a zip")
        zf.writestr("test.txt", "")
    err = one_line_error(cli("fetch", "toy", "--from", archive))
    assert f"train.zip in {archive}: not a valid zip" in err
    folder = tmp_path / "folder"
    extract_zip(archive, folder)
    err = one_line_error(cli("fetch", "toy", "--from", folder))
    assert f"{folder / 'train.zip'}: not a valid zip" in err


@pytest.mark.parametrize("name", ["/etc/evil.txt", "../evil.txt", "a/../../evil.txt", "C:/x.txt"])
def test_unsafe_entries_are_rejected(tmp_path, name):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(name, "x")
    with pytest.raises(DataError, match="unsafe entry"):
        extract_zip(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_symlink_entry_and_zip_bomb_are_rejected(tmp_path):
    archive = tmp_path / "link.zip"
    info = zipfile.ZipInfo("link")
    info.external_attr = (0o120777) << 16
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DataError, match="symbolic link"):
        extract_zip(archive, tmp_path / "out")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * (64 << 20))
    with pytest.raises(DataError, match="compression ratio"):
        extract_zip(bomb, tmp_path / "out")


def test_unknown_competition_lists_the_known_ones(cli):
    res = cli("fetch", "no-such-comp", "--from", ".")
    assert res.code != 0 and "facial-keypoints" in res.err and "ibug-68" in res.err


def test_bytecode_beside_the_plugin_does_not_invalidate_the_cache(toy, tmp_path):
    fetch(toy, _toy_zip(tmp_path / "toy.zip"))
    (toy.root / "__pycache__").mkdir()
    (toy.root / "__pycache__" / "plugin.cpython-311.pyc").write_bytes(b"\0bytecode")
    assert fetch(toy, tmp_path / "toy.zip").status == "up to date"
    (toy.root / "plugin.py").write_text(TOY_PLUGIN + "\n# reader changed\n")
    assert fetch(toy, tmp_path / "toy.zip").status == "fetched"


def test_cache_files_get_the_usual_mode(toy, tmp_path):
    fetch(toy, _toy_zip(tmp_path / "toy.zip"))
    assert toy.workspace.train_npz.stat().st_mode & 0o644 == 0o644


def test_the_bundled_plugins_define_what_kit_calls() -> None:
    from kit.competition import CompetitionPlugin, ExamplePlugin

    for name in ("facial-keypoints", "ibug-68"):
        assert isinstance(load_competition(name).plugin, CompetitionPlugin), name
    assert isinstance(load_competition("facial-keypoints").plugin, ExamplePlugin)
    assert not isinstance(load_competition("ibug-68").plugin, ExamplePlugin)  # no demo scoring


def test_the_demo_runs_on_the_competition_whose_config_offers_one() -> None:
    from kit.competition import ExamplePlugin, available, demo_competition

    offering = [name for name in available() if load_competition(name).demo]
    assert offering == [demo_competition().name]
    assert isinstance(demo_competition().plugin, ExamplePlugin)
