"""Batched prediction from a device uint8 tensor, with horizontal-flip test-time augmentation.

Flip TTA: predict the mirrored image too, mirror its x back (x -> S - 1 - x, pixel centres),
put each keypoint back in its own column (left and right swap under a flip), and average.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from kit.training.speed import Speed, family_cpu_speed


def unflip(points: Tensor, flip_perm: Tensor, width: int) -> Tensor:
    """Keypoints predicted on a mirrored image -> the same keypoints on the original image."""
    out = points[:, flip_perm].clone()
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def predict_with_flip(predict, images: Tensor, flip_perm: Tensor | None) -> Tensor:
    """`predict` (images (B,1,S,S) -> (B,K,2) pixels), averaged with its mirrored prediction."""
    pred = predict(images)
    if flip_perm is None:
        return pred
    mirrored = predict(images.flip(-1))
    return 0.5 * (pred + unflip(mirrored, flip_perm, images.shape[-1]))


@torch.no_grad()
def predict_rows(
    model: nn.Module,
    images: Tensor,
    rows: np.ndarray | None,
    device: torch.device,
    *,
    batch_size: int = 256,
    flip_perm: list[int] | None = None,
    speed: Speed | None = None,
) -> np.ndarray:
    """(n, K, 2) float32 input-pixel predictions of `model` for `rows` of uint8 `images`
    (N, 1, S, S) on `device` (all rows if None); flip TTA when `flip_perm` is given.
    `speed` is how the model ran in training (default: its family's "auto" settings)."""
    speed = speed or Speed.auto(device, family_cpu_speed(getattr(model, "family", "")))
    speed.prepare(model)  # a reloaded model predicts in the memory format it trained in
    was_training = model.training
    model.eval()
    index = (
        torch.arange(len(images), device=device)
        if rows is None
        else torch.from_numpy(np.asarray(rows, np.int64)).to(device)
    )
    perm = None if flip_perm is None else torch.tensor(flip_perm, dtype=torch.long, device=device)

    def predict(batch: Tensor) -> Tensor:
        with speed.autocast(device):
            output = model(speed.layout(batch))
        return model.codec.decode(output).float()

    chunks = []
    for start in range(0, len(index), batch_size):
        batch = images[index[start : start + batch_size]].float().div_(255.0)
        chunks.append(predict_with_flip(predict, batch, perm).cpu())
    model.train(was_training)
    if not chunks:
        k = model.codec.num_keypoints
        return np.zeros((0, k, 2), np.float32)
    return torch.cat(chunks).numpy().astype(np.float32)
