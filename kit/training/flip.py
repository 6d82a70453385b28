"""Horizontal flips of keypoint subsets: the permutation that swaps left and right partners.

Columns at or beyond K are columns of widened labels (kit.training.sources): column h * K + k is
keypoint k in head h's block, and its partner is sought in the same block.
"""

from __future__ import annotations

import torch
from torch import Tensor

from kit.competition import Competition
from kit.errors import KitError
from kit.training.config import RunConfig


def flip_permutation(comp: Competition, keypoints: tuple[int, ...]) -> list[int] | None:
    """The flip permutation as columns of `keypoints`, or None if a flip partner is absent."""
    column = {k: i for i, k in enumerate(keypoints)}
    partners = _partners(comp, keypoints)
    if any(p not in column for p in partners):
        return None
    return [column[p] for p in partners]


def _partners(comp: Competition, columns: tuple[int, ...]) -> list[int]:
    """The column of each column's flip partner, in the same block of widened labels."""
    full, k = comp.flip_permutation(), comp.num_keypoints
    return [c - c % k + full[c % k] for c in columns]


def check_flip(comp: Competition, config: RunConfig, keypoints: tuple[int, ...]) -> None:
    """Flip augmentation and flip TTA need every flip partner among the trained keypoints."""
    if flip_permutation(comp, keypoints) is not None:
        return
    if config.augment.flip > 0 or config.train["tta"]:
        absent = set(_partners(comp, keypoints)) - set(keypoints)
        missing = sorted({comp.keypoint_names[c % comp.num_keypoints] for c in absent})
        raise KitError(
            f"the keypoint subset lacks the flip partners {', '.join(missing)}",
            hint="add them to --keypoints, or --set flip=0 --set tta=false",
        )


def flip_perm_tensor(comp: Competition, keypoints: tuple[int, ...], device: torch.device) -> Tensor:
    perm = flip_permutation(comp, keypoints) or list(range(len(keypoints)))  # no flip then
    return torch.tensor(perm, dtype=torch.long, device=device)
