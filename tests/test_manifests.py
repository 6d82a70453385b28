"""Typed manifests: one writer, one reader, a format version; old files load, bad ones are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kit.errors import DataError
from kit.store.manifests import RunManifest, StackManifest, SubmissionManifest, manifest_kind


def submission(**changes) -> SubmissionManifest:
    fields = dict(
        competition="toy",
        file="a.csv",
        csv_sha256="0" * 64,
        cv_score=1.5,
        metric="rmse",
        source={"kind": "run", "id": "lenet-1"},
    )
    return SubmissionManifest(**(fields | changes))


def test_round_trip_stamps_kind_and_version(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    written = submission(kaggle_ref=7, uploaded=True)
    written.write(path)
    data = json.loads(path.read_text())
    assert manifest_kind(data) == ("submission", SubmissionManifest.VERSION)
    assert SubmissionManifest.load(path) == written


def test_a_manifest_from_before_formats_loads(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    old = submission().to_json()
    del old["format"]
    old["an_old_extra_field"] = 1  # unknown keys are ignored
    path.write_text(json.dumps(old))
    assert SubmissionManifest.load(path) == submission()


def test_a_newer_format_is_refused_with_the_file_and_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "new.json"
    data = submission().to_json()
    data["format"]["version"] = SubmissionManifest.VERSION + 1
    path.write_text(json.dumps(data))
    with pytest.raises(
        DataError, match=r"new\.json: submission manifest format 2 is newer.*upgrade"
    ):
        SubmissionManifest.load(path)


def test_missing_fields_and_another_kind_are_named(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    data = submission().to_json()
    del data["metric"], data["source"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"m\.json: submission manifest lacks metric, source"):
        SubmissionManifest.load(path)
    path.write_text(json.dumps(submission().to_json()))
    for reader in (RunManifest, StackManifest):
        with pytest.raises(DataError, match=f"a submission manifest, not a {reader.KIND} one"):
            reader.load(path)
    path.write_text("{broken")
    with pytest.raises(DataError, match=r"m\.json: cannot read the manifest"):
        RunManifest.load(path)


def test_a_submission_manifest_that_named_its_second_source_after_the_subset_loads(
    tmp_path: Path,
) -> None:
    """Before the 8 + 30 split was facial-keypoints' [submit_split], kit wrote the second
    source as ``eight_source`` (null without one): read as subset_source, subset "eight"."""
    second = {"kind": "run", "id": "lenet-2", "cv_score": 1.2}
    for old_value, expected in ((second, second), (None, None)):
        path = tmp_path / "old.json"
        old = submission().to_json()
        del old["subset_source"], old["subset"]
        old["eight_source"] = old_value
        old["cv"] = {"source": {"overall": 1.5}, "eight": 1.1 if old_value else None}
        path.write_text(json.dumps(old))
        loaded = SubmissionManifest.load(path)
        assert loaded.subset_source == expected and loaded.subset == "eight"
        assert loaded.cv["eight"] == (1.1 if old_value else None)
    written = submission(subset_source=second, subset="eight")
    written.write(path)
    assert SubmissionManifest.load(path) == written
