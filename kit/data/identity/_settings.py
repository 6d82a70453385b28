"""Identity grouping settings: the knobs of identity_groups and the calibrated default."""

from __future__ import annotations

from dataclasses import dataclass

# Chance matches per row the merge threshold lets through (threshold_for). Calibrated by
# benchmarks/identity_calibration.py: on IMM as FKD-like crops with FKD's 4 keypoints, the
# highest recall at precision >= 0.9 whose fkd-proxy precision estimate is >= 0.9 too (2 has
# IMM's precision 0.92 and the proxy's 0.89; 1 has 0.97 and 0.93 for a recall 0.87 vs 0.87).
DEFAULT_FALSE_MATCHES = 1.0

# What describes a face: "face-net" (dlib's identity ResNet, the extra kit[faces]),
# "hand-made" (aligned HOG + LBP, always there), or "auto": the face net when its weights are
# installed and the competition names its eyes (identity_anchors), else hand-made.
EMBEDDERS = ("auto", "face-net", "hand-made")
# Ward-linkage cut of face-net descriptors, near-identical frames (closer than the collapse
# distance) counted once (benchmarks/identity_face_net.py): IMM's 32 people come out exactly
# up to 1.0 (precision 0.95 at 1.1); on fkd-proxy, 0.95 gives 267 groups for its 203 people
# at a precision estimate of 0.96, which falls from 1.0 (0.95, then 0.92 at 1.1). Tripling
# the proxy with jittered copies moves that to 287 groups (plain Ward: 648).
DEFAULT_FACE_NET_CUT = 0.95
DEFAULT_FACE_NET_COLLAPSE = 0.2


@dataclass(frozen=True)
class IdentitySettings:
    """Knobs of identity_groups; the defaults are the calibrated ones (see the benchmark)."""

    # Merge while two groups' mean S-normed similarity is >= threshold (z units); None derives
    # it from the number of rows: threshold_for(N, false_matches).
    embedder: str = "auto"
    face_net_cut: float = DEFAULT_FACE_NET_CUT
    face_net_collapse: float = DEFAULT_FACE_NET_COLLAPSE
    face_net_max_share: float = 0.5  # "auto" sets the net aside when one group has more rows
    # The hand-made path's knobs.
    threshold: float | None = None
    false_matches: float = DEFAULT_FALSE_MATCHES
    patch: int = 64  # aligned patch side, pixels
    crop: float = 1.7  # patch half-side in RMS radii of the mean anchor shape, centred ...
    lift: float = 0.35  # ... this many radii above its centroid: more brow and hair, less
    # mouth and chin, which change with expression (IMM at false_matches 1, mean over patch
    # sizes 62-66: precision 0.92 -> 0.96, recall 0.77 -> 0.86 from lift 0)
    # Without anchors the mean shape is every keypoint's; outlines (jaw, brows) spread wider
    # than eyes, nose and mouth (IMM's 58 points: 1.35 times), hence a smaller factor.
    crop_all_keypoints: float = 1.25
    hog_cells: int = 11  # HOG cells per side
    hog_bins: int = 9
    lbp_grid: int = 8  # LBP cells per side
    max_dims: int = 128  # PCA whitening keeps at most this many dimensions ...
    rows_per_dim: int = 5  # ... and at most rows / rows_per_dim (whitening noise on few rows)
    frontalise: bool = True
    mirror: bool = True
    remove_pose: bool = True
    pose_dims: int = 3  # embedding directions the pose may take away
    refine: bool = True  # second pass whitened by the first pass's within-group covariance
    within_shrink: float = 0.5  # ridge on that covariance, as a share of its mean eigenvalue
    seed: int = 0  # randomised SVD and S-norm subsample; the output is deterministic per seed
