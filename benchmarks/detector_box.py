"""Calibrate a competition's face box against OpenCV's Haar box, for `kit predict`'s detector.

    python benchmarks/detector_box.py [IBUG_PROXY_DIR]

ibug-68 crops its faces around dlib-style face boxes (the boxes of its XML files), but the face
detector `kit predict` ships is OpenCV's Haar cascade, whose boxes are framed differently. This
script runs the detector as kit does (kit.predict.detect.HaarDetector) on the ibug-68-proxy
training photos, keeps the Haar box that overlaps each labelled box most (IoU at least 0.3),
and measures the labelled box against it in Haar box sides: its side (w of the labelled box / w
of the Haar box) and its centre's offset (dx, dy). The medians are the `detector_box` option of
competitions/ibug-68/competition.toml; the IoU of the labelled boxes with the raw Haar boxes and
with the corrected ones says what the correction buys.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout without `pip install -e .`
sys.path.insert(0, str(REPO / "benchmarks"))

from fkd_photo_crop import iou  # noqa: E402

from kit.competition import load_competition  # noqa: E402
from kit.predict.detect import HaarDetector  # noqa: E402
from kit.predict.photos import to_competition_box  # noqa: E402

DEFAULT_DIR = REPO.parent / "shared" / "data" / "ibug-68-proxy"


def matched_boxes(folder: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(labelled boxes, their Haar boxes) as (n, 4) x, y, w, h arrays; the faces tried."""
    comp = load_competition("ibug-68")
    faces = comp.plugin.read_dlib_xml(
        folder / "labels_ibug_300W_train.xml", "train xml", with_parts=True
    )
    detector = HaarDetector()
    labelled, haar = [], []
    for face in faces:
        with Image.open(folder / face.file) as image:
            rgb = np.asarray(image.convert("RGB"))
        box = np.array(face.box, np.float64)  # left, top, width, height
        scored = [(iou(np.asarray(b), box), b) for b in detector(rgb)]
        best = max(scored, default=(0.0, None), key=lambda pair: pair[0])
        if best[0] >= 0.3:
            labelled.append(box)
            haar.append(np.asarray(best[1], np.float64))
    return np.array(labelled), np.array(haar), len(faces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args()
    labelled, haar, tried = matched_boxes(args.folder)
    side = labelled[:, 2] / haar[:, 2]
    centre = lambda b: b[:, :2] + b[:, 2:] / 2  # noqa: E731
    offset = (centre(labelled) - centre(haar)) / haar[:, 2:3]
    fit = {"side": float(np.median(side)), "dx": float(np.median(offset[:, 0])),
           "dy": float(np.median(offset[:, 1]))}  # fmt: skip
    corrected = np.array([to_competition_box(tuple(b), fit) for b in haar])
    before = np.median([iou(a, b) for a, b in zip(labelled, haar, strict=True)])
    after = np.median([iou(a, b) for a, b in zip(labelled, corrected, strict=True)])
    print(f"faces: {tried}, matched to a Haar box: {len(labelled)}")
    print(
        f"labelled box in Haar box sides: side {fit['side']:.3f} (IQR "
        f"{np.percentile(side, 25):.3f}-{np.percentile(side, 75):.3f}), centre offset "
        f"({fit['dx']:+.3f}, {fit['dy']:+.3f})"
    )
    print(f"median IoU with the labelled box: Haar {before:.3f}, corrected {after:.3f}")


if __name__ == "__main__":
    main()
