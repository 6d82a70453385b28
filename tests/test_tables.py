"""Tables that fit the terminal: short unique labels with a legend, free text last and cut to one
line, every column with --wide, and the full data with --format csv|json; at 80 and 120 columns.

The stack and the tracker's overview are built here from plain data (no training, no Kaggle)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from rich.console import Console, RenderableType

from kit.cli.labels import MAX_KEYPOINT, MAX_MODEL, keypoint_labels, legend, model_labels
from kit.cli.output import plain, records
from kit.cli.plan_view import plan_table
from kit.cli.tables import stack_data, stack_frame, stack_table
from kit.cli.track_views import overview_data, render, submissions_frame
from kit.competition import load_competition
from kit.planning.outcome import RunOutcome
from kit.planning.planner import PlannedRun
from kit.stack import BLEND, LIGHTGBM, PICKED, RIDGE
from kit.track.views import Overview, Standing

WIDTHS = (80, 120)
COMPETITIONS = ("facial-keypoints", "ibug-68")
RUNS = (
    "heatmap-265e7e7aab93",
    "heatmap-26f0aa11bb22",  # the same family and the same first two hash digits
    "resnet-0a1b2c3d4e5f",
    "sp-99887766aabb",
    "lenet-123456abcdef",
    "convbn-fedcba987654",
)


def rendered(renderable: RenderableType, width: int) -> list[str]:
    """The lines a `width`-column terminal shows."""
    term = Console(width=width, record=True, highlight=False)
    term.print(renderable)
    return term.export_text().splitlines()


def parse_legend(text: str) -> dict[str, str]:
    """`L.eye.c left_eye_center (note), ...` -> {label: name}."""
    pairs = [p.split(" ") for p in re.sub(r" \([^)]*\)", "", text).split(", ") if p]
    return {label: name for label, name in pairs}


# ------------------------------------------------------------------------- labels


@pytest.mark.parametrize("name", COMPETITIONS)
def test_keypoint_labels_are_short_unique_and_the_legend_maps_them_back(name: str) -> None:
    names = list(load_competition(name).keypoint_names)
    labels = keypoint_labels(names, reserved={"overall"})
    assert list(labels) == names
    assert len(set(labels.values())) == len(names)
    assert all(len(label) <= MAX_KEYPOINT for label in labels.values())
    assert "overall" not in labels.values()
    back = parse_legend(legend(labels))
    assert all(back.get(labels[n], n) == n for n in names)  # every short label maps back
    assert set(back) == {label for n, label in labels.items() if label != n}


def test_fkd_keypoints_abbreviate_and_ibug_keeps_its_short_names() -> None:
    fkd = keypoint_labels(load_competition("facial-keypoints").keypoint_names)
    assert fkd["left_eye_center"] == "L.eye.c"
    assert fkd["left_eye_inner_corner"] == "L.eye.in"
    assert fkd["right_eyebrow_outer_end"] == "R.brow.out"
    assert fkd["mouth_center_bottom_lip"] == "mouth.c.bot"
    assert len(parse_legend(legend(fkd))) == 15
    ibug = keypoint_labels(load_competition("ibug-68").keypoint_names)
    assert ibug["jaw_00"] == "jaw_00" and legend(ibug) == ""


def test_colliding_or_long_abbreviations_fall_back_to_numbered_keys() -> None:
    assert keypoint_labels(["left_eye_corner", "left_eye_end"]) == {
        "left_eye_corner": "k01",
        "left_eye_end": "k02",
    }  # both abbreviate to L.eye
    assert list(keypoint_labels(["a_very_long_name_indeed", "b"]).values()) == ["k01", "k02"]


def test_model_labels_are_short_unique_and_the_legend_maps_them_back() -> None:
    labels = model_labels(RUNS, reserved={"blend", "stack"})
    assert labels["heatmap-265e7e7aab93"] == "heat.265"
    assert labels["heatmap-26f0aa11bb22"] == "heat.26f"
    assert labels["sp-99887766aabb"] == "sp.99"
    assert len(set(labels.values())) == len(RUNS)
    assert all(len(label) <= MAX_MODEL for label in labels.values())
    assert parse_legend(legend(labels)) == {v: k for k, v in labels.items()}
    odd = model_labels(["my-own-model-name", "another"])
    assert odd == {"my-own-model-name": "m1", "another": "m2"}


# ------------------------------------------------------------------------- the stack table


def fake_stack(competition: str, runs: tuple[str, ...] = RUNS) -> SimpleNamespace:
    """A StackResult's fields as `kit stack` prints them: a method per row, a CV per keypoint."""
    comp = load_competition(competition)
    names = list(comp.keypoint_names)
    rng = np.random.default_rng(0)
    methods = [(r, "base") for r in runs] + [
        (BLEND, "blend"),
        (f"best single ({runs[0]})", "best single"),
        (RIDGE, "stack"),
        (LIGHTGBM, "stack"),
        (PICKED, "stack"),
    ]
    rows = [
        {"method": m, "kind": k, "keypoints": len(names), "overall": rng.uniform(1, 3)}
        | {n: rng.uniform(1, 12) for n in names}
        for m, k in methods
    ]
    picks = {n: (RIDGE, LIGHTGBM, runs[1])[i % 3] for i, n in enumerate(names)}
    manifest = SimpleNamespace(
        runs=[{"run_id": r, "family": r.split("-")[0]} for r in runs],
        metric=comp.metric,
        keypoints=names,
        picks=picks,
        best_single=runs[0],
    )
    return SimpleNamespace(
        manifest=manifest, table=pd.DataFrame(rows), stack_id="0123456789ab", cv_score=1.5
    )


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("competition", COMPETITIONS)
def test_the_stack_table_fits_with_whole_labels(competition: str, width: int) -> None:
    result = fake_stack(competition)
    lines = rendered(stack_table(result, width), width)
    assert max(len(line) for line in lines) <= width
    assert not any("…" in line for line in lines)  # nothing cut: keypoints, models, values
    header = next(line for line in lines if line.startswith("keypoint"))
    shown = header.split()[1:-1]
    assert {"stack", "picked"} <= {*shown, "picked"} and len(shown) >= 6
    keys = keypoint_labels(result.manifest.keypoints, reserved={"overall"})
    start = lines.index(header) + 2  # under the header's rule
    rows, caption = lines[start : start + 1 + len(keys)], "\n".join(lines[start + 1 + len(keys) :])
    firsts = [row.split()[0] for row in rows]
    assert firsts == ["overall", *keys.values()]  # a row per keypoint, each with its own label
    assert all(len(row.split()) == len(shown) + 2 for row in rows[1:])  # every cell whole
    all_labels = model_labels(RUNS)
    hidden = [label for label in all_labels.values() if label not in shown]
    if hidden:
        assert "not shown, for width:" in caption and "--wide" in caption
        assert all(label in caption for label in hidden)
    for run, label in all_labels.items():  # the legend names every model
        assert f"{label} {run}" in " ".join(caption.split())


def test_more_columns_fit_120_than_80_and_wide_shows_them_all() -> None:
    result = fake_stack("facial-keypoints")

    def header(width: int | None) -> list[str]:
        lines = rendered(stack_table(result, width), 400)
        return next(line for line in lines if line.startswith("keypoint")).split()

    narrow, wider, whole = header(80), header(120), header(None)
    assert len(narrow) < len(wider) <= len(whole)
    metas = ["blend", "single", "ridge", "lgbm", "stack", "picked"]
    assert whole == ["keypoint", *model_labels(RUNS).values(), *metas]
    assert "lgbm" in narrow and "stack" in narrow  # the meta-models go last


def test_the_stack_frame_and_json_have_full_names_and_every_column() -> None:
    result = fake_stack("facial-keypoints")
    frame = stack_frame(result)
    assert list(frame["keypoint"]) == ["overall", *result.manifest.keypoints]
    assert list(frame.columns) == [
        "keypoint",
        *RUNS,
        BLEND,
        f"best single ({RUNS[0]})",
        RIDGE,
        LIGHTGBM,
        PICKED,
        "picked",
    ]
    assert frame["picked"].iloc[1] == RIDGE
    assert frame.loc[1, RUNS[0]] == result.table.loc[0, "left_eye_center"]
    data = json.loads(json.dumps(stack_data(result)))
    assert data["runs"] == list(RUNS) and len(data["rows"]) == 16
    assert data["rows"][1]["keypoint"] == "left_eye_center"


def test_json_values_are_plain() -> None:
    assert plain(np.int64(0)) == 0 and type(plain(np.int64(0))) is int
    assert plain(float("nan")) is None and plain(np.float32(1.5)) == 1.5
    frame = pd.DataFrame({"a": [1, 2], "b": [0.5, np.nan]})
    assert json.dumps(records(frame)) == '[{"a": 1, "b": 0.5}, {"a": 2, "b": null}]'


# ------------------------------------------------------------------------- kit track show

NOTE = "stack of heatmap and resnet, " * 12  # a long description: eleven lines before


def fake_overview() -> Overview:
    now = Standing(1, datetime(2024, 3, 1, tzinfo=UTC), 42, "me", 3, 20, 1.9, 1.9)
    top = pd.DataFrame(
        {
            "rank": [1, 2, 3],
            "team_id": [7, 8, 42],
            "team_name": ["a team with a rather long name, " * 3, "b", "me"],
            "score": ["1.50000", "1.70000", "1.90000"],
            "submission_count": [12, np.nan, 3],
            "submission_date": ["2024-02-01T10:00:00.000Z"] * 3,
        }
    )
    submissions = pd.DataFrame(
        {
            "ref": [301, 302],
            "date": ["2024-02-02T10:00:00.000Z", "2024-02-01T09:00:00.000Z"],
            "description": [NOTE, "short"],
            "file_name": ["submission-stack-0123456789ab.csv", "sub.csv"],
            "status": ["COMPLETE", "ERROR"],
            "public_score": ["1.90000", ""],
            "private_score": ["", ""],
            "error_description": ["", "bad header"],
            "cv_score": [1.85, np.nan],
        }
    )
    return Overview("facial-keypoints", False, now, None, None, 1, top, submissions)


@pytest.mark.parametrize("width", WIDTHS)
def test_track_show_gives_each_submission_one_line(width: int) -> None:
    lines = rendered(render(fake_overview(), width), width)
    assert max(len(line) for line in lines) <= width
    for ref in ("301", "302"):
        assert len([line for line in lines if f" {ref} " in line]) == 1
    first = next(line for line in lines if " 301 " in line)
    assert "1.85" in first and "scored" in first and first.rstrip().endswith("…")
    assert "bad header" in next(line for line in lines if " 302 " in line)  # an error's note
    team = next(line for line in lines if line.lstrip().startswith("1 "))
    assert team.rstrip().endswith("…") and "1.50000" in team
    assert not any("nan" in line for line in lines)  # a team without an entry count
    # the note gives way before the file name, which a 120-column terminal shows whole
    assert ("submission-stack-0123456789ab.csv" in first) == (width >= 120)


def test_track_show_data_is_whole() -> None:
    ov = fake_overview()
    frame = submissions_frame(ov)
    assert frame["note"].tolist() == [NOTE, "bad header"]
    data = json.loads(json.dumps(overview_data(ov)))
    assert data["submissions"][0]["note"] == NOTE and data["submissions"][1]["local_cv"] is None
    assert data["top"][1]["entries"] is None and data["top"][2]["you"] is True
    assert data["summary"][1].startswith("you: me, rank 3 of 20")


# ------------------------------------------------------------------------- the plan table


@pytest.mark.parametrize("width", WIDTHS)
def test_the_plan_table_keeps_runs_on_one_line(width: int) -> None:
    plan = SimpleNamespace(
        runs=[1, 2], folds=5, estimated_seconds=100.0, stack_seconds=10.0, seconds=120.0,
        search=None, skipped=(),
    )  # fmt: skip
    overrides = {"lr": 0.001, "width": 64, "sigma": 1.5, "dropout": 0.1}
    outcome = [
        RunOutcome(
            PlannedRun(f"heatmap-default-seed{i}", "heatmap", overrides, 40, i, 50.0),
            actual_seconds=48.0,
            run_id=f"heatmap-{i}",
            cv=1.91,
            note="stopped early at epoch 31: the validation loss stopped improving " * 2,
        )
        for i in (1, 2)
    ]
    lines = rendered(plan_table(plan, outcome, width), width)
    assert max(len(line) for line in lines) <= width
    for i in (1, 2):
        row = [line for line in lines if f"heatmap-default-seed{i}" in line]
        assert len(row) == 1 and "1.9100" in row[0]
