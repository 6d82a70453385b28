"""Calibrate facial-keypoints' photo crop: where FKD's keypoints sit relative to a Haar face box.

    python benchmarks/fkd_photo_crop.py [IBUG_PROXY_DIR]

`kit predict facial-keypoints PHOTO` crops a face box (OpenCV's Haar frontal-face detector,
or --box) to a square and resizes it to 96x96, and the network expects FKD's framing: the
eyes at about y = 38 and 36 px apart, the mouth at about y = 76. This script finds the square
(its side and centre in box units) that gives that framing, from real faces with real
landmarks: the ibug-68-proxy's training photos (300-W AFW and HELEN faces, 68 iBUG points).

For each photo it runs the detector as kit does (kit.predict.detect.HaarDetector), keeps the
detection that overlaps the labelled face most (IoU with the landmarks' bounding box at least
0.3), turns the 68 points into FKD's 15 (kit.data.synthetic.fkd15_from_68) and expresses them
in box units, u = (x - box centre x) / box side (likewise v for y). Then a least-squares fit of
one scale and two offsets maps the mean (u, v) of the keypoints whose iBUG and FKD markup agree
(eye centres and corners, mouth corners, top lip; the fkd-proxy README measures the others as
a few pixels apart) to FKD's mean keypoints (as the fkd-proxy README quotes them). Prints the
fit (the constants of competitions/facial-keypoints/photo.py) and every keypoint's residual.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout without `pip install -e .`

from kit.competition import load_competition  # noqa: E402
from kit.data.synthetic import fkd15_from_68  # noqa: E402
from kit.predict.detect import HaarDetector  # noqa: E402

DEFAULT_DIR = REPO.parent / "shared" / "data" / "ibug-68-proxy"
SIZE = 96
# Real FKD training.csv means (x, y), in FKD's keypoint order (fkd-proxy README).
FKD_MEANS = np.array(
    [
        (66.4, 37.7), (30.3, 38.0), (59.2, 37.9), (73.3, 37.7), (36.7, 38.0), (22.4, 38.0),
        (56.1, 29.3), (79.5, 29.7), (39.3, 29.5), (15.9, 30.4), (48.4, 62.7), (63.3, 76.0),
        (32.9, 76.2), (48.0, 72.9), (48.6, 79.0),
    ]
)  # fmt: skip
# Keypoints whose iBUG definition matches FKD's clicks (eyes, mouth corners, top lip).
AGREE = (0, 1, 2, 3, 4, 5, 11, 12, 13)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (x, y, w, h) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def box_units(folder: Path) -> tuple[np.ndarray, int, int]:
    """(n, 15, 2) FKD keypoints in box units of the matched Haar box; faces tried and missed."""
    comp = load_competition("ibug-68")
    faces = comp.plugin.read_dlib_xml(
        folder / "labels_ibug_300W_train.xml", "train xml", with_parts=True
    )
    detector = HaarDetector()
    units, missed = [], 0
    for face in faces:
        with Image.open(folder / face.file) as image:
            rgb = np.asarray(image.convert("RGB"))
        lo, hi = face.points.min(0), face.points.max(0)
        extent = np.array([lo[0], lo[1], *(hi - lo)])
        scored = [(iou(np.asarray(b), extent), b) for b in detector(rgb)]
        best = max(scored, default=(0.0, None), key=lambda pair: pair[0])
        if best[0] < 0.3:
            missed += 1
            continue
        x, y, w, h = best[1]
        fkd = fkd15_from_68(face.points[None].astype(np.float64))[0]
        centre = np.array([x + w / 2, y + h / 2])
        units.append((fkd - centre) / np.array([w, h]))
    return np.stack(units), len(faces), missed


def fit_crop(mean_units: np.ndarray) -> tuple[float, float, float]:
    """(side, dx, dy) in box sides: FKD pixel = 96 / side * (u - d) + 47.5 fits the agreeing
    keypoints' FKD means best (least squares; one scale, an offset per axis)."""
    rows, targets = [], []
    for k in AGREE:
        for axis in (0, 1):
            rows.append([mean_units[k, axis], axis == 0, axis == 1])
            targets.append(FKD_MEANS[k, axis])
    (alpha, bx, by), *_ = np.linalg.lstsq(np.array(rows, float), np.array(targets), rcond=None)
    side = SIZE / alpha
    centre = SIZE / 2 - 0.5
    return float(side), float((centre - bx) / alpha), float((centre - by) / alpha)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    units, tried, missed = box_units(args.folder)
    mean = units.mean(axis=0)
    side, dx, dy = fit_crop(mean)
    print(f"faces: {tried}, matched to a Haar box: {len(units)}, missed: {missed}")
    print(f"crop: side {side:.3f} box sides, centre offset ({dx:+.4f}, {dy:+.4f}) box sides")
    predicted = SIZE / side * (mean - np.array([dx, dy])) + SIZE / 2 - 0.5
    spread = units.std(axis=0) * SIZE / side
    names = load_competition("facial-keypoints").keypoint_names
    print("| keypoint | FKD mean | Haar crop mean | SD (px) | fitted |")
    print("| --- | --- | --- | --- | --- |")
    for k, name in enumerate(names):
        f, p, s = FKD_MEANS[k], predicted[k], spread[k]
        used = "yes" if k in AGREE else "no"
        print(
            f"| {name} | ({f[0]:.1f}, {f[1]:.1f}) | ({p[0]:.1f}, {p[1]:.1f}) "
            f"| ({s[0]:.1f}, {s[1]:.1f}) | {used} |"
        )


if __name__ == "__main__":
    main()
