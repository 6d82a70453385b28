"""Bad inputs and damaged work folders (issue 25 §3): each is one line naming the file or
option at fault and what rebuilds it, a non-zero exit, and nothing already written changes.

Damaged files are DataErrors (exit 2, as every validated read in kit); a bad option is a
KitError (exit 1)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_stack import TINY_NAME, one_torch_thread, tiny_competition, tiny_run  # noqa: F401

from kit.competition import Competition
from kit.errors import DataError, KitError

TINY_TRAIN = (
    "--epochs", "1", "--device", "cpu", "--set", "hidden=16", "--set", "batch_size=16",
    "--set", "patience=0", "--set", "tta=false",
)  # fmt: skip


pytestmark = pytest.mark.usefixtures("submissions")  # conftest: a fresh folder


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Competition:
    return tiny_competition(tmp_path, monkeypatch)


def files_of(*roots: Path) -> dict[str, str]:
    """sha256 of every file under `roots`: what a refused command must leave as it was."""
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for root in roots
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def refused(result, code: int, *parts: str) -> None:
    """One error line (no traceback) holding every one of `parts`, and exit `code`."""
    assert result.code == code, result.err
    assert "Traceback" not in result.err
    lines = result.messages.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.err
    for part in parts:
        assert part in " ".join(result.err.split()), (part, result.err)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# ------------------------------------------------------------- 1: a truncated cache


def test_a_truncated_train_cache_is_one_line_and_kit_fetch_rebuilds_it(
    tiny: Competition, tmp_path: Path, cli
) -> None:
    cache = tiny.workspace.train_npz
    truncate(cache)
    before = files_of(tiny.workspace.root)
    result = cli("train", TINY_NAME, "sp", *TINY_TRAIN)
    refused(result, DataError.exit_code, str(cache), "cannot read", f"kit fetch {TINY_NAME}")
    assert files_of(tiny.workspace.root) == before and not tiny.workspace.runs.exists()
    fetched = cli("fetch", TINY_NAME, "--from", tmp_path / "source")  # what the line says
    assert fetched.code == 0 and "fetched" in fetched.out, fetched.err
    assert cli("train", TINY_NAME, "sp", *TINY_TRAIN).code == 0


def test_a_truncated_test_cache_stops_train_and_submit_before_they_write(
    tiny: Competition, submissions: Path, cli
) -> None:
    run = tiny_run(tiny)
    truncate(tiny.workspace.test_npz)
    before = files_of(tiny.workspace.root)
    trained = cli("train", TINY_NAME, "sp", *TINY_TRAIN, "--set", "lr=0.02")
    refused(trained, DataError.exit_code, str(tiny.workspace.test_npz), f"kit fetch {TINY_NAME}")
    submitted = cli("submit", TINY_NAME, "--dry-run", "--from", run.run_id)
    refused(submitted, DataError.exit_code, str(tiny.workspace.test_npz), "cannot read")
    assert files_of(tiny.workspace.root) == before and not submissions.exists()


def test_a_cache_missing_a_field_or_of_another_shape_is_refused(tiny: Competition) -> None:
    from kit.data.arrays import KeypointData

    path = tiny.workspace.train_npz
    data = KeypointData.load(path)
    np.savez(path, images=data.images, keypoints=data.keypoints, ids=data.ids)
    with pytest.raises(DataError, match="lacks groups, to_original"):
        KeypointData.load(path)
    np.savez(path, **{**vars(data), "keypoints": data.keypoints[:, :, 0]})
    with pytest.raises(DataError, match=r"keypoints has shape \(60, 15\), not \(60, N, 2\)"):
        KeypointData.load(path)
    np.save(path.with_suffix(".npy"), data.images)
    path.with_suffix(".npy").rename(path)
    with pytest.raises(DataError, match=r"not an \.npz archive"):
        KeypointData.load(path)


# ------------------------------------------------------- 2: a run's arrays of another shape


def test_an_oof_short_of_a_keypoint_is_refused_by_stack_and_reassembled_by_train(
    tiny: Competition, cli
) -> None:
    run = tiny_run(tiny)
    full = run.oof.copy()
    np.save(run.folder.oof, full[:, :-1])
    before = files_of(tiny.workspace.root)
    result = cli("stack", TINY_NAME)
    refused(result, DataError.exit_code, str(run.folder.oof), "(60, 14, 2), not (60, 15, 2)")
    assert "kit train" in result.err
    assert files_of(tiny.workspace.root) == before and not tiny.workspace.stacks.exists()
    again = tiny_run(tiny)  # what the line says: the same run, assembled again from its folds
    assert not again.reused and again.run_id == run.run_id
    np.testing.assert_array_equal(again.oof, full)


def test_a_damaged_fold_file_names_its_done_marker(tiny: Competition) -> None:
    run = tiny_run(tiny)
    run.folder.manifest.unlink()  # the run is assembled again from its folds' files
    truncate(run.folder.arrays(1))
    with pytest.raises(DataError, match=r"fold-1\.npz: cannot read.*delete .*fold-1\.done\.json"):
        tiny_run(tiny)


# ----------------------------------------------------- 3: a fold outside the file's k


def test_a_fold_outside_k_is_refused_and_kit_folds_writes_the_same_file_again(
    tiny: Competition, cli
) -> None:
    path = tiny.workspace.folds_csv
    original = path.read_bytes()
    frame = pd.read_csv(path)
    frame.loc[5, "fold"] = 3  # k is 3: folds 0..2
    path.write_text(frame.to_csv(index=False))
    before = files_of(tiny.workspace.root)
    result = cli("train", TINY_NAME, "sp", *TINY_TRAIN)
    rebuild = f"kit folds {TINY_NAME} --k 3 --seed 0 --group-by identity --force"
    refused(result, DataError.exit_code, str(path), "row 5 has fold 3, outside 0..2", rebuild)
    assert files_of(tiny.workspace.root) == before and not tiny.workspace.runs.exists()
    assert cli(*rebuild.split()[1:]).code == 0
    assert path.read_bytes() == original  # the same partition: runs made on it stay valid


def test_an_empty_fold_is_refused(tiny: Competition) -> None:
    from kit.data.arrays import KeypointData
    from kit.data.folds import load_folds

    path = tiny.workspace.folds_csv
    frame = pd.read_csv(path)
    frame.loc[frame["fold"] == 1, "fold"] = 0
    path.write_text(frame.to_csv(index=False))
    with pytest.raises(DataError, match=r"fold 1 has no rows \(the file's k is 3\)"):
        load_folds(tiny, KeypointData.load(tiny.workspace.train_npz))


# ------------------------------------------------------ 4: output paths, checked first


def test_predict_out_naming_a_file_or_a_folder_with_a_prediction_is_refused_first(
    tiny: Competition, tmp_path: Path, cli
) -> None:
    """Refused before a source is even looked for (this work folder has no run)."""
    photo = tmp_path / "face.png"
    photo.write_bytes(b"never read")
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "keypoints.csv").write_text("an earlier prediction")
    before = files_of(tmp_path)
    box = ("--box", "0,0,10,10")
    as_file = cli("predict", TINY_NAME, photo, *box, "--out", a_file)
    refused(as_file, KitError.exit_code, f"--out {a_file}: is a file, not a folder")
    under_file = cli("predict", TINY_NAME, photo, *box, "--out", a_file / "sub")
    refused(under_file, KitError.exit_code, f"{a_file} is a file, not a folder")
    holding = cli("predict", TINY_NAME, photo, *box, "--out", earlier)
    refused(holding, KitError.exit_code, f"--out {earlier}: already holds keypoints.csv")
    assert files_of(tmp_path) == before and not tiny.workspace.predict.exists()


def test_report_out_naming_a_folder_is_refused_before_the_report_is_built(
    tiny: Competition, tmp_path: Path, cli
) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    refused(
        cli("report", TINY_NAME, "--out", folder),
        KitError.exit_code,
        f"--out {folder}: is a folder",
    )


# ------------------------------------------- 5: a --box bounded by the photo it frames


def test_a_box_far_larger_than_the_photo_is_one_line_not_an_allocation(
    tiny: Competition, tmp_path: Path, cli
) -> None:
    from PIL import Image

    tiny_run(tiny)
    photo = tmp_path / "face.png"
    Image.fromarray(np.full((90, 90), 128, np.uint8)).save(photo)
    out = tmp_path / "new" / "deeper"
    huge = "-50000,-50000,100045,100045"  # its centre (22.5, 22.5) lies inside the photo
    result = cli("predict", TINY_NAME, photo, "--box", huge, "--out", out)
    assert result.code == DataError.exit_code, result.err
    assert f"{photo}: the box -50000,-50000 100045x100045 is over 2 times" in result.out
    assert "at most 180x180" in result.out and "Traceback" not in result.err
    assert not out.exists()
    fitting = cli("predict", TINY_NAME, photo, "--box", "-20,-20,130,130", "--out", out)
    assert fitting.code == 0, fitting.err  # an overhanging box is fine; --out's folders made
    assert (out / "keypoints.csv").is_file()


# ------------------------------------------- 6: a run manifest's fields, and what they hold


def edit_manifest(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        *parents, last = key.split("__")
        target = data
        for parent in parents:
            target = target[parent]
        if value is None:
            del target[last]
        else:
            target[last] = value
    path.write_text(json.dumps(data))


def test_a_manifest_lacking_a_cv_field_is_one_line_in_every_command_listing_runs(
    tiny: Competition, submissions: Path, cli
) -> None:
    from kit.store import list_runs

    run = tiny_run(tiny)
    edit_manifest(run.folder.manifest, cv__overall=None)
    before = files_of(tiny.workspace.root)
    said = (str(run.folder.manifest), "cv.overall is missing, not a finite number", "kit train")
    for command in (("report", TINY_NAME), ("stack", TINY_NAME), ("submit", TINY_NAME)):
        refused(cli(*command, "--dry-run") if command[0] == "submit" else cli(*command),
                DataError.exit_code, *said)  # fmt: skip
    assert files_of(tiny.workspace.root) == before and not submissions.exists()
    again = tiny_run(tiny)  # what the line says: the manifest is written again
    assert not again.reused and [r.run_id for r in list_runs(tiny)] == [run.run_id]


@pytest.mark.parametrize(
    ("change", "said"),
    [({"seed": "zero"}, "manifest field seed is 'zero', not a whole number"),
     ({"cv__overall": "nan"}, "cv.overall is 'nan', not a finite number"),
     ({"train_seconds": True}, "train_seconds is True, not a finite number"),
     ({"keypoint_indices": [0, 1]}, "has 15 keypoint names for 2 indices"),
     ({"folds__trained": None}, "folds.trained is not a list of fold numbers")],
)  # fmt: skip
def test_a_manifest_field_of_the_wrong_kind_is_named(
    tiny: Competition, change: dict, said: str
) -> None:
    from kit.store import list_runs

    run = tiny_run(tiny)
    edit_manifest(run.folder.manifest, **change)
    with pytest.raises(DataError, match=re.escape(said)) as caught:
        list_runs(tiny)
    assert str(caught.value).startswith(str(run.folder.manifest))


# ------------------------------------------------ 7: a source of another competition


def test_predict_from_a_run_of_another_competition_names_both(
    tiny: Competition, tmp_path: Path, cli
) -> None:
    from kit.competition import load_competition

    run = tiny_run(tiny)
    photo = tmp_path / "face.png"
    photo.write_bytes(b"never read")
    before = files_of(tmp_path)
    result = cli("predict", "imm-58", photo, "--box", "0,0,10,10", "--from", run.path)
    said = f"run {run.run_id} ({run.path}) is a run of {TINY_NAME}, not of imm-58"
    refused(result, KitError.exit_code, said)
    assert files_of(tmp_path) == before
    assert not load_competition("imm-58").workspace.root.exists()
    submitted = cli("submit", "imm-58", "--dry-run", "--from", run.path)
    refused(submitted, KitError.exit_code, said)


# ------------------------------------------- the class: every file read back is checked


def test_a_damaged_done_marker_or_stack_table_is_one_line(tiny: Competition, cli) -> None:
    from kit.stack import stack

    run = tiny_run(tiny)
    stacked = stack(tiny, [run])
    (stacked.path / "table.csv").write_bytes(b"")
    said = (f"{stacked.path / 'table.csv'}: cannot read the table", "rerun `kit stack`")
    refused(cli("submit", TINY_NAME, "--dry-run"), DataError.exit_code, *said)
    run.folder.manifest.unlink()
    run.folder.marker(0).write_text("{not json")
    with pytest.raises(DataError, match=r"fold-0\.done\.json: cannot read .*delete it"):
        tiny_run(tiny)
