"""Horizontal flips of keypoint subsets: the permutation that swaps left and right partners."""

from __future__ import annotations

import torch
from torch import Tensor

from kit.competition import Competition
from kit.errors import KitError
from kit.training.config import RunConfig


def flip_permutation(comp: Competition, keypoints: tuple[int, ...]) -> list[int] | None:
    """The flip permutation as columns of `keypoints`, or None if a flip partner is absent."""
    full = comp.flip_permutation()
    column = {k: i for i, k in enumerate(keypoints)}
    if any(full[k] not in column for k in keypoints):
        return None
    return [column[full[k]] for k in keypoints]


def check_flip(comp: Competition, config: RunConfig, keypoints: tuple[int, ...]) -> None:
    """Flip augmentation and flip TTA need every flip partner among the trained keypoints."""
    if flip_permutation(comp, keypoints) is not None:
        return
    if config.augment.flip > 0 or config.train["tta"]:
        full = comp.flip_permutation()
        missing = sorted(
            {comp.keypoint_names[full[k]] for k in keypoints}
            - {comp.keypoint_names[k] for k in keypoints}
        )
        raise KitError(
            f"the keypoint subset lacks the flip partners {', '.join(missing)}",
            hint="add them to --keypoints, or --set flip=0 --set tta=false",
        )


def flip_perm_tensor(comp: Competition, keypoints: tuple[int, ...], device: torch.device) -> Tensor:
    perm = flip_permutation(comp, keypoints) or list(range(len(keypoints)))  # no flip then
    return torch.tensor(perm, dtype=torch.long, device=device)
