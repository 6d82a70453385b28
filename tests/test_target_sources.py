"""--target-set sources: one trunk, one head per label source (kit.training.sources).

Routing (training rows by their labels, test rows by what IdLookupTable.csv asks), the heads'
blocks and flips, the plan's manifest round trip, the errors, and on a tiny fetched competition
whose two sources differ by a known offset: the masked target set leaves that offset in the
OOF, sources removes it.
"""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import numpy as np
import pytest
import test_stack as stack_tests
import torch

import kit.training.runs
from kit.competition import Competition, load_competition
from kit.data.arrays import KeypointData
from kit.data.folds import write_folds
from kit.errors import KitError
from kit.pseudo import make_pseudo_labels
from kit.training.checkpoint import load_fold_model
from kit.training.flip import flip_permutation
from kit.training.predict import predict_rows
from kit.training.runs import train_run
from kit.training.sources import Heads, route
from kit.training.targets import TargetPlan, plan_targets

FKD = load_competition("facial-keypoints")
EIGHT, FULL = 0, 1  # FKD's [sources], in declared order
TINY_NAME, TINY_SIZE = stack_tests.TINY_NAME, stack_tests.TINY_SIZE
N_TRAIN, N_TEST = 48, 9  # write_example: ~70 % of the rows keep only the eight keypoints
TINY_SP = {"hidden": 16, "batch_size": 16, "patience": 0}
OFFSET_PX = 2.0  # the synthetic disagreement between the two annotations


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny runs on one intra-op thread (see tests/test_stack.py)."""
    monkeypatch.setattr(kit.training.runs, "configure_cpu_threads", lambda: 1)
    torch.set_num_threads(1)


def tiny_competition(root: Path, monkeypatch: pytest.MonkeyPatch) -> Competition:
    """test_stack's tiny competition at N_TRAIN rows (IdLookupTable.csv: a third of the test
    images ask all 30 values, the others the eight's 8); folds are written by the tests."""
    return stack_tests.tiny_competition(root, monkeypatch, N_TRAIN, N_TEST, folds=None)


def tiny_run(comp: Competition, target_set: str, **kwargs) -> kit.training.runs.RunResult:
    overrides = {**TINY_SP, **kwargs.pop("overrides", {})}
    kwargs = {"epochs": 2, "pictures": False, "device": "cpu", **kwargs}
    return train_run(comp, "sp", overrides, target_set=target_set, **kwargs)


def mask(*names: str) -> np.ndarray:
    row = np.zeros(FKD.num_keypoints, bool)
    row[[FKD.keypoint_names.index(n) for n in names]] = True
    return row


EIGHT_NAMES = ("left_eye_center", "right_eye_center", "nose_tip", "mouth_center_bottom_lip")


# ------------------------------------------------------------------------- routing


def test_rows_go_to_the_smallest_source_that_covers_their_labels() -> None:
    heads = Heads.of(FKD)
    assert heads.names == ("eight", "full")
    assert heads.keypoints == (tuple(sorted(FKD.subset_indices("eight"))), tuple(range(15)))
    labelled = np.stack(
        [
            mask(*EIGHT_NAMES),  # the 4-keypoint annotation
            mask(*EIGHT_NAMES[1:]),  # ragged: one of the four missing
            np.ones(15, bool),  # complete
            mask(*EIGHT_NAMES, "mouth_left_corner"),  # more than the four: the full annotation
            mask("left_eyebrow_inner_end"),  # only a keypoint the four lack
            np.zeros(15, bool),  # nothing labelled: every source covers it, the smallest wins
        ]
    )
    assert heads.assign(labelled).tolist() == [EIGHT, EIGHT, FULL, FULL, FULL, EIGHT]


def test_a_tie_goes_to_the_first_declared_source() -> None:
    rows = np.stack([mask("mouth_left_corner"), mask(), mask("nose_tip")])
    for first, second in (("brows", "mouth"), ("mouth", "brows")):  # 4 keypoints each
        comp = dataclasses.replace(FKD, sources={first: first, second: second, "all": "all"})
        heads = Heads.of(comp)
        assert [heads.names[h] for h in heads.assign(rows)] == ["mouth", first, "all"]
    twins = dataclasses.replace(FKD, sources={"a": "nose", "b": "nose_tip", "all": "all"})
    with pytest.raises(KitError, match="sources a and b have the same keypoints"):
        Heads.of(twins)


def test_test_images_are_routed_by_the_features_the_lookup_table_asks(tmp_path: Path) -> None:
    comp = dataclasses.replace(FKD, input_size=TINY_SIZE)
    raw = comp.plugin.write_example(tmp_path, comp, n_train=4, n_test=6, seed=0)
    test = comp.plugin.read_test(raw / "test.csv", comp)
    asked = comp.plugin.test_keypoints(raw, comp, test)
    assert asked.dtype == bool and asked.shape == (6, 15)
    # write_example: the first third of the images ask all 30 values, the rest the eight's 8
    assert asked.sum(axis=1).tolist() == [15, 15, 4, 4, 4, 4]
    assert Heads.of(comp).assign(asked).tolist() == [FULL, FULL, EIGHT, EIGHT, EIGHT, EIGHT]
    # The real table also has images asking 6 values (3 of the four) or 18 (no eye centre):
    lookup = (raw / "IdLookupTable.csv").read_text().splitlines()
    keep = [
        line
        for line in lookup[1:]
        if not (line.split(",")[1] == "3" and "nose_tip" in line)  # image 3 asks 6 values
        and not (line.split(",")[1] == "1" and "eye_center" in line)  # image 1 asks 26
    ]
    (raw / "IdLookupTable.csv").write_text("\n".join([lookup[0], *keep]) + "\n")
    asked = comp.plugin.test_keypoints(raw, comp, test)
    assert asked.sum(axis=1).tolist() == [13, 15, 3, 4, 4, 4]
    assert Heads.of(comp).assign(asked).tolist() == [FULL, FULL, EIGHT, EIGHT, EIGHT, EIGHT]


def test_labels_widen_into_their_home_heads_and_predictions_come_back() -> None:
    heads = Heads.of(FKD)
    nose, brow = FKD.keypoint_names.index("nose_tip"), 6
    labels = np.arange(2 * 15 * 2, dtype=np.float32).reshape(2, 15, 2)
    sources = np.array([EIGHT, FULL])
    wide = heads.widen(labels, sources, np.nan)
    assert wide.shape == (2, 30, 2)
    # the eight row: its four in the eight block; a keypoint the eight lack (a pseudo label)
    # in the widest head that has it, the full block
    np.testing.assert_array_equal(wide[0, nose], labels[0, nose])
    np.testing.assert_array_equal(wide[0, 15 + brow], labels[0, brow])
    assert np.isnan(wide[0, 15 + nose]).all() and np.isnan(wide[0, brow]).all()
    np.testing.assert_array_equal(wide[1, 15:], labels[1])  # the full row: all in its block
    assert np.isnan(wide[1, :15]).all()
    weights = heads.widen(np.ones((2, 15), np.float32), sources, 0.0)
    assert weights.sum() == 30 and weights.shape == (2, 30)

    # The network's outputs are the heads' columns: the eight's 4, then the full's 15.
    columns = heads.columns
    assert len(columns) == 19 and columns[:4] == heads.keypoints[EIGHT]
    out = np.stack([np.array(columns, np.float32)] * 2)[..., None].repeat(2, axis=-1)
    picked = heads.pick(out, sources, tuple(range(15)))
    assert picked.shape == (2, 15, 2)
    assert picked[0, nose, 0] == nose and picked[0, brow, 0] == 15 + brow  # eight row
    assert (picked[1, :, 0] == 15 + np.arange(15)).all()  # full row: every point from full


def test_flips_swap_partners_within_each_head() -> None:
    heads = Heads.of(FKD)
    perm = flip_permutation(FKD, heads.columns)
    assert perm is not None
    full = FKD.flip_permutation()
    columns = heads.columns
    for i, column in enumerate(columns):
        block, k = divmod(column, 15)
        assert columns[perm[i]] == block * 15 + full[k]  # the partner, in the same block
    assert flip_permutation(FKD, (0, 15)) is None  # left eye of head 0 with no right eye there


# ------------------------------------------------------------------------- plan and errors


def test_the_plan_round_trips_through_its_description() -> None:
    plan = plan_targets(FKD, "sources")
    (sub,) = plan.submodels
    assert plan.heads == sub.heads == Heads.of(FKD) and sub.keypoints == tuple(range(15))
    described = plan.describe()
    assert described["submodels"][0]["heads"] == {
        "names": ["eight", "full"],
        "keypoints": [sorted(FKD.subset_indices("eight")), list(range(15))],
        "num_keypoints": 15,
    }
    assert TargetPlan.from_description(described) == plan
    # A plan without heads describes itself as before (its old run ids stay meaningful).
    assert set(plan_targets(FKD, "masked").describe()) == {"target_set", "keypoints", "submodels"}
    assert "heads" not in plan_targets(FKD, "8-30").describe()["submodels"][0]
    with pytest.raises(KitError, match="drop --keypoints"):
        plan_targets(FKD, "sources", "eyes")


def test_a_competition_without_sources_is_told_what_to_add(cli) -> None:
    ibug = load_competition("ibug-68")
    with pytest.raises(KitError, match=r"competition\.toml: .*declares no label sources"):
        plan_targets(ibug, "sources")
    result = cli("train", "ibug-68", "sp", "--target-set", "sources")
    assert result.code == 1
    assert "competition.toml" in result.err and "[sources]" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_routing_needs_the_plugins_test_keypoints_and_sources_covering_every_row() -> None:
    heads = Heads.of(FKD)
    labels = np.full((2, 15, 2), np.nan, np.float32)
    train = KeypointData.whole_images(np.zeros((2, 8, 8), np.uint8), labels, np.arange(2))
    comp = dataclasses.replace(FKD)
    comp.__dict__["plugin"] = types.SimpleNamespace()  # a plug-in without test_keypoints
    with pytest.raises(KitError, match="no test_keypoints function"):
        route(comp, heads, train, train)
    split = dataclasses.replace(
        FKD,
        sources={
            "eight": "eight",
            "rest": ",".join(n for n in FKD.keypoint_names if n not in EIGHT_NAMES),
        },
    )
    labels[0, [0, 6]] = 1.0  # an eye centre and a brow: neither source has both
    with pytest.raises(KitError, match="1 training rows have labels that no declared source"):
        route(split, Heads.of(split), train, train)


# ------------------------------------------------------------------------- training


def offset_competition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Competition:
    """The tiny competition with the eight source's labels moved OFFSET_PX down (in y: a flip
    maps a shift in x to its opposite, so flip augmentation and TTA would cancel one)."""
    comp = tiny_competition(tmp_path, monkeypatch)
    data = KeypointData.load(comp.workspace.train_npz)
    eight = Heads.of(comp).assign(np.isfinite(data.keypoints).all(axis=2)) == EIGHT
    data.keypoints[eight, :, 1] += OFFSET_PX
    data.save(comp.workspace.train_npz)
    write_folds(comp, k=3)
    return comp


def test_sources_remove_an_offset_between_annotations_that_masked_keeps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two annotations OFFSET_PX apart on the four keypoints both label: masked's OOF keeps
    the disagreement (its one head predicts between them), sources' OOF does not."""
    comp = offset_competition(tmp_path, monkeypatch)
    data = KeypointData.load(comp.workspace.train_npz)
    source = Heads.of(comp).assign(np.isfinite(data.keypoints).all(axis=2))
    four = sorted(comp.subset_indices("eight"))  # labelled by both sources

    def bias(oof: np.ndarray, rows: np.ndarray) -> float:
        """Mean signed y error of the four shared keypoints on `rows` (OOF - label), px."""
        return float(np.nanmean(oof[rows][:, four, 1] - data.keypoints[rows][:, four, 1]))

    masked, sources = tiny_run(comp, "masked"), tiny_run(comp, "sources")
    eight_rows, full_rows = source == EIGHT, source == FULL
    # One head cannot tell the annotations apart: it predicts between them, so the offset
    # source's OOF sits above its labels and the other's below (they differ by ~OFFSET_PX).
    assert bias(masked.oof, eight_rows) < -0.3
    assert bias(masked.oof, full_rows) - bias(masked.oof, eight_rows) > 0.75 * OFFSET_PX
    # One head per source: each row is predicted in its own source's convention.
    assert abs(bias(sources.oof, eight_rows)) < 0.2
    assert abs(bias(sources.oof, full_rows)) < 0.2
    assert sources.cv_score < masked.cv_score


def test_train_sources_end_to_end_with_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    """`kit train ... --target-set sources` on write_example's data: (N, K, 2) OOF and test
    arrays, each row from its own source's block, the routing in the manifest, and the plan
    read back from it."""
    comp = tiny_competition(tmp_path, monkeypatch)
    write_folds(comp, k=3)
    result = cli(
        "train",
        TINY_NAME,
        "sp",
        "--target-set",
        "sources",
        "--epochs",
        "1",
        "--folds",
        "2",
        *(f"--set={k}={v}" for k, v in TINY_SP.items()),
    )
    assert result.code == 0, result.err
    run = tiny_run(comp, "sources", epochs=1, folds=2)
    assert run.reused and run.run_id in result.out
    data = KeypointData.load(comp.workspace.train_npz)
    test = KeypointData.load(comp.workspace.test_npz)
    predicted = np.flatnonzero(run.oof_folds >= 0)
    assert run.oof.shape == (N_TRAIN, 15, 2) and np.isfinite(run.oof[predicted]).all()
    assert run.test.shape == (N_TEST, 15, 2) and np.isfinite(run.test).all()
    routing = run.manifest.data["sources"]
    assert routing["test_rows"] == {"eight": 6, "full": 3}  # as IdLookupTable.csv asks
    assert sum(routing["train_rows"].values()) == N_TRAIN
    plan = TargetPlan.from_description(run.manifest.plan)
    assert plan == plan_targets(comp, "sources")

    # Fold 0's OOF and test rows are its model's own source's block (flip TTA on).
    model = load_fold_model(run.path, 0)
    assert model.codec.num_keypoints == 19  # the eight's 4 + the full's 15
    routed = route(comp, plan.heads, data, test)
    perm = flip_permutation(comp, plan.heads.columns)
    cpu = torch.device("cpu")
    images = torch.from_numpy(data.images).unsqueeze(1)
    rows = np.flatnonzero(run.oof_folds == 0)
    out = predict_rows(model, images, rows, cpu, flip_perm=perm)  # (n, 19, 2)
    four = list(plan.heads.keypoints[EIGHT])
    eight, full = routed.train[rows] == EIGHT, routed.train[rows] == FULL
    assert eight.any() and full.any()
    np.testing.assert_allclose(run.oof[rows[eight]][:, four], out[eight][:, :4], atol=1e-4)
    others = [k for k in range(15) if k not in four]  # not the eight's: from the full head
    np.testing.assert_allclose(
        run.oof[rows[eight]][:, others], out[eight][:, 4:][:, others], atol=1e-4
    )
    np.testing.assert_allclose(run.oof[rows[full]], out[full][:, 4:], atol=1e-4)
    test_out = predict_rows(
        model, torch.from_numpy(test.images).unsqueeze(1), None, cpu, flip_perm=perm
    )
    with np.load(run.path / "fold-0.npz") as fold:
        fold_test = fold["test"]  # (M, 15, 2): what fold 0 predicted for the test images
    eight, full = routed.test == EIGHT, routed.test == FULL
    assert eight.sum() == 6 and full.sum() == 3
    np.testing.assert_allclose(fold_test[eight][:, four], test_out[eight][:, :4], atol=1e-4)
    np.testing.assert_allclose(fold_test[full], test_out[full][:, 4:], atol=1e-4)


def test_a_sources_run_teaches_strictly_and_a_sources_student_trains_on_its_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A strict pseudo-label set rebuilds each fold model's routed predictions (fold k's test
    labels are what the run's fold k predicted), and a student with heads trains on them: the
    test rows train too, each in its routed source's head."""
    comp = tiny_competition(tmp_path, monkeypatch)
    write_folds(comp, k=3)
    teacher = tiny_run(comp, "sources", epochs=1)
    strict = make_pseudo_labels(comp, teacher.run_id, strict=True, device="cpu")
    with np.load(teacher.path / "fold-1.npz") as fold:
        np.testing.assert_allclose(strict.fold_labels(1)[1], fold["test"], atol=1e-4)
    student = tiny_run(comp, "sources", epochs=1, folds=1, overrides={"pseudo": strict.pseudo_id})
    record = json.loads((student.path / "fold-0.done.json").read_text())
    main = record["submodels"]["main"]
    assert record["pseudo"]["test_rows"] == N_TEST
    data = KeypointData.load(comp.workspace.train_npz)
    routed = route(comp, Heads.of(comp), data, KeypointData.load(comp.workspace.test_npz))
    train_rows = student.oof_folds != 0  # fold 0 trains on the other folds' rows
    assert main["source_rows"] == {
        name: int(
            np.count_nonzero(routed.train[train_rows] == h) + np.count_nonzero(routed.test == h)
        )
        for h, name in enumerate(("eight", "full"))
    }  # the 6 test images that ask the eight's 8 values train in the eight head, 3 in full
