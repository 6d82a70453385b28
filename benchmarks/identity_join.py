"""Can one person's videos be joined? Two ways tried on top of kit.data.identity's groups.

    python benchmarks/identity_join.py [--data ../shared/data] [--train-seconds 15]

kit's identity groups on fkd-proxy are mostly one video each (634 groups of 203 people). This
measures two ways to join them, each as a second clustering of the groups at a sweep of
thresholds (threshold_for(groups, c) for c chance matches per group):

- centroids: each group's mean hand-made embedding (aligned HOG + LBP, kit's own), S-normed
  and clustered by average linkage; averaging a video's frames should steady the descriptor.
- learned: a small CNN trained on the aligned patches to tell the groups apart (the groups as
  pseudo-labels: one class per video), with photometric and shift augmentation so that light
  and framing do not separate classes; its embedding's group centroids clustered the same way.

Scored on fkd-proxy by the group count and the precision estimate of
identity_calibration.purity_estimate (the proxy draws its missing keypoints per person, so a
group mixing 15- and 4-keypoint rows mixes people; 0 is chance), and on the IMM faces
(identity_calibration's FKD-like crops, person numbers known) by pairwise precision and
recall (mean of 3 crop seeds). Prints Markdown.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run as a script from a checkout without `pip install -e .`
sys.path.insert(0, str(REPO / "benchmarks"))

from identity_calibration import fkd_keypoints, load_fkd_proxy, load_imm, purity_estimate  # noqa: E402

from kit.data import identity  # noqa: E402
from kit.data.identity import FKD15_ANCHORS, IdentitySettings  # noqa: E402

CHANCE = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def first_pass(images: np.ndarray, keypoints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """kit's hand-made embeddings and its identity groups."""
    settings = IdentitySettings()
    emb = identity.embeddings(images, keypoints, FKD15_ANCHORS, settings)
    threshold = identity.threshold_for(len(emb), settings.false_matches)
    return emb, identity.group_embeddings(emb, threshold, settings)


def join(emb: np.ndarray, labels: np.ndarray, chance: float) -> np.ndarray:
    """Rows' labels after clustering the groups' unit mean embeddings."""
    groups = labels.max() + 1
    centroids = np.zeros((groups, emb.shape[1]))
    np.add.at(centroids, labels, emb)
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    z = identity.similarity_z(centroids.astype(np.float32))
    return identity.cluster(z, identity.threshold_for(groups, chance))[labels]


def learned_embedding(
    images: np.ndarray, keypoints: np.ndarray, labels: np.ndarray, seconds: float
) -> np.ndarray:
    """(N, 64) unit embeddings of a CNN trained for `seconds` to classify `labels` (CosFace
    margin 0.2, scale 16) from 32 px aligned patches with light, gradient and shift jitter."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    settings = IdentitySettings()
    patches = identity.aligned_patches(images, identity.align(keypoints, FKD15_ANCHORS), settings)
    x = F.avg_pool2d(torch.from_numpy(patches)[:, None] / 255.0, 2)
    x = (x - x.mean((2, 3), keepdim=True)) / (x.std((2, 3), keepdim=True) + 1e-3)
    y = torch.from_numpy(labels)
    classes = int(labels.max()) + 1

    def block(i: int, o: int) -> nn.Module:
        conv = nn.Conv2d(i, o, 3, padding=1, bias=False)
        return nn.Sequential(conv, nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    net = nn.Sequential(
        block(1, 32), block(32, 64), block(64, 96), block(96, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 64),
    )  # fmt: skip
    weights = nn.Parameter(torch.randn(classes, 64) * 0.01)
    opt = torch.optim.AdamW([*net.parameters(), weights], lr=3e-3, weight_decay=5e-4)
    ramp = torch.linspace(-1, 1, x.shape[-1])
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for idx in torch.randperm(len(x)).split(128):
            b = x[idx]
            n = len(b)
            b = torch.where(torch.rand(n, 1, 1, 1) < 0.5, b.flip(3), b)
            b = b * torch.exp(0.3 * torch.randn(n, 1, 1, 1)) + 0.3 * torch.randn(n, 1, 1, 1)
            b = (
                b
                + 0.5 * torch.randn(n, 1, 1, 1) * ramp
                + 0.5 * torch.randn(n, 1, 1, 1) * ramp[:, None]
            )
            b = torch.roll(
                b, shifts=tuple(int(s) for s in np.random.randint(-2, 3, 2)), dims=(2, 3)
            )
            f = F.normalize(net(b), dim=1)
            logits = f @ F.normalize(weights, dim=1).T
            loss = F.cross_entropy(16 * (logits - 0.2 * F.one_hot(y[idx], classes)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return F.normalize(net(x) + net(x.flip(3)), dim=1).numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--train-seconds", type=float, default=15.0)
    args = parser.parse_args()
    images, keypoints = load_fkd_proxy(args.data / "fkd-proxy")
    hand, groups = first_pass(images, keypoints)
    learned = learned_embedding(images, keypoints, groups, args.train_seconds)
    imm = []
    for seed in range(3):
        im, points, person = load_imm(args.data / "imm-58-proxy" / "imm_face_db", seed)
        imm.append((*first_pass(im, fkd_keypoints(points)), person))
    base = purity_estimate(groups, keypoints)
    print(f"First pass (kit's groups): {groups.max() + 1} groups, precision estimate {base:.3f}\n")
    print("| chance matches per group | centroids: fkd groups | precision estimate "
          "| IMM precision | IMM recall | learned: fkd groups | precision estimate |")  # fmt: skip
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for c in CHANCE:
        joined, taught = join(hand, groups, c), join(learned, groups, c)
        scores = [identity.pair_precision_recall(join(e, g, c), p) for e, g, p in imm]
        precision = np.mean([s.precision for s in scores])
        recall = np.mean([s.recall for s in scores])
        print(
            f"| {c:g} | {joined.max() + 1} | {purity_estimate(joined, keypoints):.3f} "
            f"| {precision:.3f} | {recall:.3f} | {taught.max() + 1} "
            f"| {purity_estimate(taught, keypoints):.3f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
