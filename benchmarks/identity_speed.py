"""Time kit.data.identity's grouping of 7049 faces, the real FKD training set's size.

    python benchmarks/identity_speed.py [--data ../shared/data] [--rows 7049]

Faces: the fkd-proxy train rows (2449, through kit's own fetch), tiled up to --rows; every copy
after the first is jittered (a random similarity of +-1.5 px, +-3 degrees, +-4 % scale on image
and keypoints, brightness +-10, noise sd 2) so that no row is an exact duplicate. Without the
proxy: synthetic people (kit.data.synthetic.make_people, 10 faces each). The stages are the
ones identity_groups runs, timed one by one; the total is the figure to compare with the target
(<= 30 s on 2 cores). Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout without `pip install -e .`

from kit.data import identity  # noqa: E402
from kit.data.identity import FKD15_ANCHORS, IdentitySettings  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/
from identity_calibration import load_fkd_proxy  # noqa: E402  (one loader for both)

REAL_ROWS = 7049


class Laps:
    """A stage timer: lap(name) records the seconds since the previous lap (or the start)."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float]] = []
        self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.times.append((name, now - self._clock))
        self._clock = now

    @property
    def total(self) -> float:
        return sum(t for _, t in self.times)


def jitter(
    image: np.ndarray, keypoints: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A slightly moved, turned, scaled and relit copy of one face (keypoints moved along)."""
    size = image.shape[0]
    angle = np.deg2rad(rng.uniform(-3, 3))
    scale = rng.uniform(0.96, 1.04)
    shift = rng.uniform(-1.5, 1.5, 2)
    centre = np.array([size / 2, size / 2])
    fwd = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    inv = np.linalg.inv(fwd)
    off = centre - inv @ (centre + shift)  # source = inv @ output + off
    coeffs = (inv[0, 0], inv[0, 1], off[0], inv[1, 0], inv[1, 1], off[1])
    moved = Image.fromarray(image).transform(
        (size, size), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR
    )
    out = np.asarray(moved, np.float32) + rng.uniform(-10, 10) + rng.normal(0, 2, (size, size))
    points = (keypoints - centre) @ fwd.T + centre + shift
    return np.clip(np.round(out), 0, 255).astype(np.uint8), points.astype(np.float32)


def faces(data: Path, rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    rng = np.random.default_rng(seed)
    source = data / "fkd-proxy"
    if source.is_dir():
        images, keypoints = load_fkd_proxy(source)
        origin = f"fkd-proxy train ({len(images)} rows) tiled with jitter"
    else:
        from kit.data.synthetic import fkd15_from_68, make_people

        people = -(-rows // 10)
        images, points, _ = make_people(people, 10, seed=seed)
        keypoints = fkd15_from_68(points)
        keypoints[::2, [2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13]] = np.nan
        return images[:rows], keypoints[:rows], f"synthetic people ({people} x 10)"
    out_images, out_points = [images], [keypoints]
    have = len(images)
    while have < rows:
        take = min(len(images), rows - have)
        pairs = [jitter(images[i], keypoints[i], rng) for i in range(take)]
        out_images.append(np.stack([p[0] for p in pairs]))
        out_points.append(np.stack([p[1] for p in pairs]))
        have += take
    return np.concatenate(out_images)[:rows], np.concatenate(out_points)[:rows], origin


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--rows", type=int, default=REAL_ROWS)
    args = ap.parse_args()
    images, keypoints, origin = faces(args.data, args.rows)
    settings = IdentitySettings()
    n = len(images)
    threshold = identity.threshold_for(n, settings.false_matches)

    laps = Laps()
    lap, times = laps.lap, laps.times
    alignment = identity.align(keypoints, FKD15_ANCHORS)
    lap("align (similarity fit to the mean anchors)")
    patches = identity.aligned_patches(images, alignment, settings)
    lap(f"warp ({settings.patch}x{settings.patch} patches, frontalised)")
    descriptors = identity.describe(patches, settings)
    lap(f"describe (HOG + LBP, {descriptors.shape[1]} values)")
    emb = identity.embed(descriptors, settings, identity.nuisance(alignment))
    lap(f"embed (PCA whitening to {emb.shape[1]}, pose projected out)")
    labels = identity.cluster(identity.similarity_z(emb, settings.seed), threshold)
    lap("group, pass 1 (S-norm, average linkage)")
    emb = identity.within_whiten(emb, labels, settings.within_shrink)
    labels = identity.cluster(identity.similarity_z(emb, settings.seed), threshold)
    lap("group, pass 2 (within-group whitening, again)")
    total = laps.total

    sizes = np.bincount(labels)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"### Identity grouping speed: {n} faces ({origin})\n")
    print("| stage | seconds |")
    print("| --- | ---: |")
    for name, seconds in times:
        print(f"| {name} | {seconds:.2f} |")
    print(f"| **total** | **{total:.1f}** |")
    print()
    print(
        f"{os.cpu_count()} CPUs, numpy {np.__version__}; threshold z = {threshold:.2f}; "
        f"{len(sizes)} groups (largest {sizes.max()}); peak RSS {peak_mb:.0f} MB; "
        f"target <= 30 s on 2 cores: {'met' if total <= 30 else 'MISSED'}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
