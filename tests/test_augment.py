"""Batched augmentation: keypoints follow the image content exactly (flip, rotate, shift, scale)."""

from __future__ import annotations

import math

import pytest
import torch

from kit.errors import KitError
from kit.training.augment import AugmentConfig, apply_affine, augment_batch, augment_weighted

SIZE = 48
BATCH = 8
# Four well-separated keypoints; 0 <-> 1 and 2 <-> 3 are mirror pairs, so flips relabel them.
POINTS = torch.tensor([[14.3, 17.6], [33.2, 18.1], [20.7, 31.4], [27.9, 30.2]])
FLIP_PERM = torch.tensor([1, 0, 3, 2])
DOT_SIGMA = 1.5


def dot_images(points: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """(B, K, S, S): channel k holds a blurred dot centred on keypoint k (sub-pixel accurate)."""
    grid = torch.arange(size, dtype=torch.float32)
    gx = torch.exp(-0.5 * ((grid - points[..., 0:1]) / DOT_SIGMA) ** 2)
    gy = torch.exp(-0.5 * ((grid - points[..., 1:2]) / DOT_SIGMA) ** 2)
    return gy[..., :, None] * gx[..., None, :]


def centroids(images: torch.Tensor) -> torch.Tensor:
    """(B, K, S, S) -> (B, K, 2) intensity-weighted centre of each channel, in pixels."""
    grid = torch.arange(images.shape[-1], dtype=torch.float32, device=images.device)
    mass = images.sum(dim=(-2, -1))
    x = (images.sum(dim=-2) * grid).sum(-1) / mass
    y = (images.sum(dim=-1) * grid).sum(-1) / mass
    return torch.stack([x, y], dim=-1)


def jittered_batch(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return POINTS + torch.rand(BATCH, *POINTS.shape, generator=g) * 2 - 1


def assert_dots_follow(
    cfg: AugmentConfig,
    seed: int = 0,
    tolerance: float = 0.15,
    device: torch.device = torch.device("cpu"),  # noqa: B008  (immutable)
) -> torch.Tensor:
    """Augment dot images on `device`; every channel's dot must sit on its (relabelled) keypoint."""
    points = jittered_batch(seed).to(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    images, moved = augment_batch(
        dot_images(points.cpu()).to(device), points, FLIP_PERM.to(device), cfg, generator=gen
    )
    found, moved = centroids(images).cpu(), moved.cpu()
    # A mirrored image has channel 0's dot (a left point) to the right of channel 1's, and
    # keypoint i is then the old keypoint perm[i], whose dot is in channel perm[i].
    flipped = (found[:, 0, 0] > found[:, 1, 0])[:, None]
    expected_channel = torch.where(flipped[..., None], found[:, FLIP_PERM], found)
    assert torch.allclose(expected_channel, moved, atol=tolerance)
    return moved


@pytest.mark.device
def test_flip_moves_dots_with_relabelled_keypoints(device: torch.device) -> None:
    moved = assert_dots_follow(AugmentConfig(flip=1.0), device=device)
    points = jittered_batch(0)
    # Mirroring about the centre, then swapping labels: x' = S - 1 - x of the partner.
    assert torch.allclose(moved[..., 0], SIZE - 1 - points[:, FLIP_PERM, 0], atol=1e-5)
    assert torch.allclose(moved[..., 1], points[:, FLIP_PERM, 1], atol=1e-5)


def test_loss_weights_follow_their_keypoints_through_a_flip() -> None:
    """augment_weighted draws what augment_batch draws; a flipped sample's weights are
    relabelled like its keypoints (here each keypoint's y is its index, which a flip keeps)."""
    points = torch.stack([torch.full((4,), 20.0), torch.arange(4.0)], -1).repeat(BATCH, 1, 1)
    weights = torch.rand(BATCH, 4, generator=torch.Generator().manual_seed(2))
    images = torch.rand(BATCH, 1, SIZE, SIZE)
    cfg = AugmentConfig(flip=0.5, brightness=0.2)
    plain = augment_batch(images, points, FLIP_PERM, cfg, torch.Generator().manual_seed(7))
    out_images, moved, out_weights = augment_weighted(
        images, points, weights, FLIP_PERM, cfg, torch.Generator().manual_seed(7)
    )
    assert torch.equal(out_images, plain[0]) and torch.equal(moved, plain[1])
    source = moved[..., 1].round().long()  # which input keypoint each output one is
    assert torch.equal(out_weights, torch.gather(weights, 1, source))
    flipped = (source != torch.arange(4)).any(dim=1)
    assert 0 < int(flipped.sum()) < BATCH  # both cases were exercised
    none = augment_weighted(images, points, None, FLIP_PERM, cfg)[2]
    assert none is None


def test_flip_twice_is_the_identity() -> None:
    points = jittered_batch(1)
    images = dot_images(points)
    cfg = AugmentConfig(flip=1.0)
    once_images, once_points = augment_batch(images, points, FLIP_PERM, cfg)
    twice_images, twice_points = augment_batch(once_images, once_points, FLIP_PERM, cfg)
    assert not torch.allclose(once_images, images, atol=1e-3)
    assert torch.allclose(twice_images, images, atol=1e-5)
    assert torch.allclose(twice_points, points, atol=1e-5)


@pytest.mark.device
def test_exact_30_degree_rotation_lands_on_the_dot(device: torch.device) -> None:
    angle = math.radians(30)
    rotation = torch.tensor(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    )
    points = POINTS[None]
    centre = (SIZE - 1) / 2
    images, moved = apply_affine(
        dot_images(points).to(device), points.to(device), FLIP_PERM.to(device),
        torch.zeros(1, dtype=torch.bool, device=device), rotation[None].to(device),
        torch.zeros(1, 2, device=device),
    )  # fmt: skip
    images, moved = images.cpu(), moved.cpu()
    expected = (points - centre) @ rotation.T + centre
    assert torch.allclose(moved, expected, atol=1e-5)
    assert torch.allclose(centroids(images), moved, atol=0.1)
    # One image holding every dot: the brightest pixel near each keypoint is within 1 px of it.
    single = images.sum(dim=1)[0]
    for x, y in moved[0].tolist():
        r0, c0 = round(y) - 3, round(x) - 3
        window = single[r0 : r0 + 7, c0 : c0 + 7]
        row, col = divmod(int(window.argmax()), 7)
        assert abs(c0 + col - x) <= 1 and abs(r0 + row - y) <= 1


@pytest.mark.parametrize(
    "cfg",
    [
        AugmentConfig(rotate_deg=30.0),
        AugmentConfig(shift=0.1, scale=0.2),
        AugmentConfig(flip=0.5, rotate_deg=20.0, shift=0.08, scale=0.15, padding="zeros"),
    ],
    ids=["rotate", "shift+scale", "all"],
)
@pytest.mark.device
def test_random_affine_keeps_keypoints_on_the_dots(
    cfg: AugmentConfig, device: torch.device
) -> None:
    moved = assert_dots_follow(cfg, seed=3, device=device)
    # A real transform happened, and a different one per sample.
    displacement = (moved - jittered_batch(3)).norm(dim=-1).mean(dim=-1)
    assert displacement.min() > 0.1
    assert displacement.std() > 0.1


def test_missing_keypoints_stay_missing() -> None:
    points = jittered_batch(4)
    points[0, 1] = float("nan")
    points[5, :] = float("nan")
    cfg = AugmentConfig(flip=0.5, rotate_deg=15, shift=0.05, scale=0.1)
    gen = torch.Generator().manual_seed(0)
    _, moved = augment_batch(torch.rand(BATCH, 1, SIZE, SIZE), points, FLIP_PERM, cfg, gen)
    missing = torch.isnan(moved).any(-1)
    assert missing[5].all() and missing[0].sum() == 1
    assert missing.sum() == 1 + len(FLIP_PERM)
    assert torch.isfinite(moved[~missing]).all()


def test_brightness_and_contrast_change_pixel_statistics() -> None:
    images = 0.4 + 0.2 * torch.rand(BATCH, 1, SIZE, SIZE)  # away from 0 and 1: no clamping
    points = jittered_batch(0)
    mean, std = images.mean(dim=(1, 2, 3)), images.std(dim=(1, 2, 3))

    dim, _ = augment_batch(images, points, FLIP_PERM, AugmentConfig(brightness=(0.5, 0.5)))
    assert torch.allclose(dim, images * 0.5)

    cfg = AugmentConfig.from_hparams({"brightness": "0.3,1.4", "optimizer": "adamw"})
    assert cfg.factor_range("brightness") == (0.3, 1.4)  # the seeds' dim 0.3 / bright 1.4
    out, _ = augment_batch(images, points, FLIP_PERM, cfg, torch.Generator().manual_seed(0))
    ratio = out.mean(dim=(1, 2, 3)) / mean
    assert ((ratio >= 0.3 - 1e-6) & (ratio <= 1.4 + 1e-6)).all() and ratio.std() > 0.05

    out, _ = augment_batch(images, points, FLIP_PERM, AugmentConfig(contrast=(2.0, 2.0)))
    assert torch.allclose(out.mean(dim=(1, 2, 3)), mean, atol=1e-5)
    assert torch.allclose(out.std(dim=(1, 2, 3)), 2 * std, rtol=1e-4)

    noisy, _ = augment_batch(images, points, FLIP_PERM, AugmentConfig(noise=0.05))
    assert (noisy - images).std() == pytest.approx(0.05, rel=0.05)
    assert noisy.min() >= 0 and noisy.max() <= 1


def test_generator_makes_it_deterministic() -> None:
    images, points = torch.rand(BATCH, 1, SIZE, SIZE), jittered_batch(0)
    originals = images.clone(), points.clone()
    cfg = AugmentConfig(flip=0.5, rotate_deg=10, shift=0.05, scale=0.1, brightness=0.2, noise=0.02)

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return augment_batch(images, points, FLIP_PERM, cfg, torch.Generator().manual_seed(seed))

    (a_img, a_pts), (b_img, b_pts), (c_img, c_pts) = run(7), run(7), run(8)
    assert torch.equal(a_img, b_img) and torch.equal(a_pts, b_pts)
    assert not torch.allclose(a_pts, c_pts) and not torch.allclose(a_img, c_img)
    assert torch.equal(images, originals[0]) and torch.equal(points, originals[1])


def test_off_config_returns_the_batch_unchanged() -> None:
    images, points = torch.rand(BATCH, 1, SIZE, SIZE), jittered_batch(0)
    out_images, out_points = augment_batch(images, points, FLIP_PERM, AugmentConfig())
    assert torch.equal(out_images, images) and torch.equal(out_points, points)


@pytest.mark.parametrize(
    ("hparams", "field"),
    [({"flip": 1.5}, "flip"), ({"brightness": "1.4,0.3"}, "brightness"), ({"scale": "x"}, "scale")],
)
def test_bad_settings_name_the_field(hparams: dict, field: str) -> None:
    with pytest.raises(KitError, match=field):
        AugmentConfig.from_hparams(hparams)


def test_mismatched_keypoints_are_rejected() -> None:
    with pytest.raises(KitError, match="flip permutation"):
        augment_batch(torch.rand(2, 1, 8, 8), torch.rand(2, 3, 2), FLIP_PERM, AugmentConfig())
