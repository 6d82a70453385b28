"""Calibrate kit.data.identity's merge threshold on the IMM face database; check it on fkd-proxy.

    python benchmarks/identity_calibration.py [--data ../shared/data] [--seeds 3]

IMM (imm-58-proxy/imm_face_db): 32 people x 6 shots that vary pose (+-30 degrees), expression and
lighting, 640x480 colour with 58 landmarks. Each shot becomes a FKD-like input: grey, scaled and
shifted (no rotation) so that the eye midpoint lands at (48, 37) and the eyes are ~36 px apart
(fkd-proxy's recipe, with its seeded jitter; --seeds repeats it with other jitter), keeping FKD's
4 keypoints (eye centres = mean of each eye's 8 points, nose tip = point 52, bottom lip = point
45). The person number in the file name is used only to score.

The threshold is set by kit.data.identity.threshold_for(N, false_matches); the sweep is over
false_matches. It reports pairwise precision/recall of "same group" vs "same person" per value,
a split-half check (pick the value on people 01-16, score it on 17-32, and the reverse), the
generic path (all 58 landmarks, no anchors), and the fkd-proxy train split (203 people, not
labelled) at the chosen value: group count, group sizes, and a precision estimate from the
proxy's missing-keypoint pattern, which it draws per person (a group that mixes 15-keypoint and
4-keypoint rows mixes people; wrong pairs mix at the chance rate 2p(1-p)). Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout without `pip install -e .`

from kit.data import identity  # noqa: E402
from kit.data.identity import FKD15_ANCHORS, IdentitySettings  # noqa: E402

FALSE_MATCHES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
MIN_PRECISION = 0.9
R0 = 1.118  # fkd-proxy's median mouth-to-eye / eye-to-eye distance ratio
FKD4 = (0, 1, 10, 14)  # left eye, right eye, nose tip, bottom lip in FKD's 15
SIZE_BINS = ((1, 1), (2, 2), (3, 3), (4, 4), (5, 8), (9, 16), (17, 32), (33, 10**9))


# ------------------------------------------------------------------------------------- IMM


def read_asf(path: Path) -> np.ndarray:
    """(58, 2) relative x, y of an IMM .asf file (see imm-58-proxy/README.md)."""
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    count = int(lines[0])
    return np.array([[float(v) for v in ln.split()[2:4]] for ln in lines[1 : 1 + count]])


def fkd_crop(
    image: Image.Image, points: np.ndarray, rng: np.random.Generator, size: int = 96
) -> tuple[np.ndarray, np.ndarray]:
    """fkd-proxy's framing: eye midpoint to (48, 37) + N(0, 2.5) px, scale 36 px * N(1, 0.08)
    over sqrt(eye distance * eye-mouth distance / R0), no rotation, bilinear."""
    left, right = points[13:21].mean(0), points[21:29].mean(0)
    mid = (left + right) / 2
    mouth = points[39:47].mean(0)
    ref = np.sqrt(np.linalg.norm(left - right) * np.linalg.norm(mouth - mid) / R0)
    scale = 36 * rng.normal(1, 0.08) / ref
    dest = np.array([48.0, 37.0]) + rng.normal(0, 2.5, 2)
    off = mid - dest / scale  # source = output / scale + off
    coeffs = (1 / scale, 0, off[0], 0, 1 / scale, off[1])
    out = image.transform((size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR)
    return np.asarray(out), ((points - mid) * scale + dest).astype(np.float32)


def load_imm(folder: Path, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 (192, 96, 96) images, float32 (192, 58, 2) landmarks, int person (192), rows in a
    seeded random order."""
    rng = np.random.default_rng(seed)
    images, points, person = [], [], []
    for jpg in sorted(folder.glob("*.jpg")):
        grey = Image.open(jpg).convert("L")
        rel = read_asf(jpg.with_suffix(".asf"))
        img, pts = fkd_crop(grey, rel * [grey.width, grey.height], rng)
        images.append(img)
        points.append(pts)
        person.append(int(jpg.name[:2]))
    order = rng.permutation(len(images))  # rows in file-name order would sit by person
    return np.stack(images)[order], np.stack(points)[order], np.array(person)[order]


def fkd_keypoints(points58: np.ndarray) -> np.ndarray:
    """(N, 15, 2) in FKD's layout with only FKD's 4 most common keypoints present."""
    out = np.full((len(points58), 15, 2), np.nan, np.float32)
    out[:, FKD4] = np.stack(
        [points58[:, 13:21].mean(1), points58[:, 21:29].mean(1), points58[:, 52], points58[:, 45]],
        axis=1,
    )
    return out


# ----------------------------------------------------------------------------------- sweeps


def sweep(
    images: np.ndarray,
    keypoints: np.ndarray,
    person: np.ndarray,
    anchors: identity.Anchors | None,
    settings: IdentitySettings,
) -> np.ndarray:
    """(len(FALSE_MATCHES), 3): precision, recall, groups per false_matches value."""
    emb = identity.embeddings(images, keypoints, anchors, settings)
    out = []
    for c in FALSE_MATCHES:
        labels = identity.group_embeddings(emb, identity.threshold_for(len(images), c), settings)
        s = identity.pair_precision_recall(labels, person)
        out.append((s.precision, s.recall, labels.max() + 1))
    return np.array(out)


def best_value(scores: np.ndarray) -> int:
    """Index of the false_matches value with the highest recall at precision >= MIN_PRECISION
    (the most precise one when none reaches it)."""
    ok = np.flatnonzero(scores[:, 0] >= MIN_PRECISION)
    return int(ok[np.argmax(scores[ok, 1])]) if len(ok) else int(np.argmax(scores[:, 0]))


def table(header: list[str], rows: list[list[str]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" ---: " for _ in header) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()


def imm_sweeps(folder: Path, seeds: int, settings: IdentitySettings) -> dict[str, np.ndarray]:
    """Mean over crop seeds of sweep() on all 32 people (4 keypoints, and all 58 landmarks
    without anchors) and on each half."""
    sets = [load_imm(folder, seed) for seed in range(seeds)]
    runs: dict[str, list[np.ndarray]] = {
        "4 keypoints": [],
        "58 landmarks": [],
        "01-16": [],
        "17-32": [],
    }
    for images, points, who in sets:
        runs["4 keypoints"].append(
            sweep(images, fkd_keypoints(points), who, FKD15_ANCHORS, settings)
        )
        runs["58 landmarks"].append(sweep(images, points, who, None, settings))
        for name, m in (("01-16", who <= 16), ("17-32", who > 16)):
            runs[name].append(
                sweep(images[m], fkd_keypoints(points[m]), who[m], FKD15_ANCHORS, settings)
            )
    return {name: np.mean(r, axis=0) for name, r in runs.items()}


def imm_tables(imm: dict[str, np.ndarray], seeds: int) -> None:
    n = 192
    print(f"### IMM: 192 faces of 32 people, mean of {seeds} crop seeds\n")
    rows = []
    for i, c in enumerate(FALSE_MATCHES):
        four, generic = imm["4 keypoints"][i], imm["58 landmarks"][i]
        rows.append(
            [
                f"{c:g}",
                f"{identity.threshold_for(n, c):.2f}",
                f"{four[0]:.3f}",
                f"{four[1]:.3f}",
                f"{four[2]:.1f}",
                f"{generic[0]:.3f}",
                f"{generic[1]:.3f}",
            ]
        )
    table(
        [
            "false_matches",
            "z threshold",
            "precision",
            "recall",
            "groups",
            "58 landmarks, no anchors: precision",
            "recall",
        ],
        rows,
    )

    print("### IMM split half: 96 faces (16 people) each\n")
    rows = [
        [f"{c:g}", f"{identity.threshold_for(n // 2, c):.2f}"]
        + [f"{imm[h][i, j]:.3f}" for h in ("01-16", "17-32") for j in (0, 1)]
        for i, c in enumerate(FALSE_MATCHES)
    ]
    table(
        ["false_matches", "z threshold", "01-16 precision", "recall", "17-32 precision", "recall"],
        rows,
    )
    rows = []
    for pick, score in (("01-16", "17-32"), ("17-32", "01-16")):
        i = best_value(imm[pick])
        rows.append(
            [
                pick,
                f"{FALSE_MATCHES[i]:g}",
                f"{imm[pick][i, 0]:.3f}",
                f"{imm[pick][i, 1]:.3f}",
                score,
                f"{imm[score][i, 0]:.3f}",
                f"{imm[score][i, 1]:.3f}",
            ]
        )
    print(
        f"Picked on one half (highest recall at precision >= {MIN_PRECISION}), "
        "scored on the other:\n"
    )
    table(
        ["picked on", "false_matches", "precision", "recall", "scored on", "precision", "recall"],
        rows,
    )


# -------------------------------------------------------------------------------- fkd-proxy


def load_fkd_proxy(source: Path) -> tuple[np.ndarray, np.ndarray]:
    """The proxy's train split through kit's own fetch, in a throwaway work folder."""
    with tempfile.TemporaryDirectory() as work:
        os.environ["KIT_WORK"] = work
        from kit.competition import load_competition
        from kit.data.arrays import KeypointData
        from kit.fetch import fetch

        comp = load_competition("facial-keypoints")
        fetch(comp, source)
        train = KeypointData.load(comp.workspace.train_npz)
    return train.images, train.keypoints


def purity_estimate(labels: np.ndarray, keypoints: np.ndarray) -> float:
    """Share of same-group pairs that are one person, estimated from the per-person missing
    pattern: 15-keypoint vs exactly FKD's 4. Ragged rows are left out."""
    present = ~np.isnan(keypoints[..., 0])
    full = present.all(1)
    four = (present.sum(1) == 4) & present[:, list(FKD4)].all(1)
    keep = full | four
    g, kind = labels[keep], full[keep].astype(float)
    total = np.bincount(g)
    ones = np.bincount(g, weights=kind, minlength=len(total))
    pairs = (total * (total - 1) / 2).sum()
    if not pairs:
        return 1.0
    chance = 2 * kind.mean() * (1 - kind.mean())
    return float(1 - (ones * (total - ones)).sum() / pairs / chance)


def fkd_sweep(source: Path, settings: IdentitySettings) -> tuple[list[np.ndarray], np.ndarray]:
    """Labels per false_matches value on the proxy's train rows, and per value: groups,
    median size, largest, singletons, precision estimate."""
    images, keypoints = load_fkd_proxy(source)
    emb = identity.embeddings(images, keypoints, FKD15_ANCHORS, settings)
    labels, stats = [], []
    for c in FALSE_MATCHES:
        lab = identity.group_embeddings(emb, identity.threshold_for(len(images), c), settings)
        sizes = np.bincount(lab)
        labels.append(lab)
        stats.append(
            (
                len(sizes),
                np.median(sizes),
                sizes.max(),
                (sizes == 1).sum(),
                purity_estimate(lab, keypoints),
            )
        )
    return labels, np.array(stats, float)


def fkd_tables(labels: list[np.ndarray], stats: np.ndarray, chosen: int) -> None:
    n = len(labels[0])
    print(f"### fkd-proxy train: {n} rows of 203 people (unlabelled)\n")
    rows = [
        [
            f"{c:g}",
            f"{identity.threshold_for(n, c):.2f}",
            f"{g:.0f}",
            f"{med:g}",
            f"{top:.0f}",
            f"{ones:.0f}",
            f"{est:.2f}",
        ]
        for c, (g, med, top, ones, est) in zip(FALSE_MATCHES, stats, strict=True)
    ]
    table(
        [
            "false_matches",
            "z threshold",
            "groups",
            "median size",
            "largest",
            "singletons",
            "precision estimate",
        ],
        rows,
    )
    sizes = np.bincount(labels[chosen])
    head, groups, members = ["size"], ["groups"], ["rows"]
    for lo, hi in SIZE_BINS:
        m = (sizes >= lo) & (sizes <= hi)
        head.append(str(lo) if lo == hi else (f"{lo}-{hi}" if hi < 10**9 else f">={lo}"))
        groups.append(str(int(m.sum())))
        members.append(str(int(sizes[m].sum())))
    print(f"Group sizes at false_matches = {FALSE_MATCHES[chosen]:g}:\n")
    table(head, [groups, members])


def choose(imm: dict[str, np.ndarray] | None, fkd: np.ndarray | None) -> int:
    """The highest IMM recall among values with IMM precision >= MIN_PRECISION and, with the
    proxy at hand, its precision estimate >= MIN_PRECISION too (32 people are few to tune on:
    the proxy's 203 are a second, independent check)."""
    ok = np.ones(len(FALSE_MATCHES), bool)
    if imm is not None:
        ok &= imm["4 keypoints"][:, 0] >= MIN_PRECISION
    if fkd is not None:
        ok &= fkd[:, 4] >= MIN_PRECISION
    if imm is None or not ok.any():
        return FALSE_MATCHES.index(identity.DEFAULT_FALSE_MATCHES)
    recall = np.where(ok, imm["4 keypoints"][:, 1], -1.0)
    return int(np.argmax(recall))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--seeds", type=int, default=3, help="IMM crop-jitter seeds to average")
    args = ap.parse_args()
    settings = IdentitySettings()
    imm_dir = args.data / "imm-58-proxy" / "imm_face_db"
    fkd_dir = args.data / "fkd-proxy"
    started = time.perf_counter()
    imm = imm_sweeps(imm_dir, args.seeds, settings) if imm_dir.is_dir() else None
    labels, fkd = fkd_sweep(fkd_dir, settings) if fkd_dir.is_dir() else (None, None)
    chosen = choose(imm, fkd)
    if imm is None:
        print(f"skipped IMM: no {imm_dir}\n")
    else:
        imm_tables(imm, args.seeds)
    if labels is None:
        print(f"skipped fkd-proxy: no {fkd_dir}\n")
    else:
        fkd_tables(labels, fkd, chosen)
    default = f"kit's DEFAULT_FALSE_MATCHES = {identity.DEFAULT_FALSE_MATCHES:g}"
    if imm is None:
        print(f"Nothing to calibrate on without IMM; {default}.")
    else:
        p, r, _ = imm["4 keypoints"][chosen]
        print(
            f"Chosen: false_matches = {FALSE_MATCHES[chosen]:g} (IMM precision {p:.3f}, "
            f"recall {r:.3f}); {default}."
        )
    print(f"({time.perf_counter() - started:.0f} s, {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
