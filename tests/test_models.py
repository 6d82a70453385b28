"""Model families, the registry and the keypoint codecs."""

from __future__ import annotations

import math

import optuna
import pytest
import torch

from kit.errors import KitError
from kit.models import (
    HeatmapCodec,
    RegressionCodec,
    create_model,
    get_family,
    list_models,
    register_model,
)
from kit.models import codec as codec_module
from kit.models import registry as registry_module

FAMILIES = ["convbn", "heatmap", "lenet", "resnet", "sixconv", "sp"]
TRAIN_KEYS = {
    "optimizer", "lr", "weight_decay", "momentum", "batch_size", "epochs", "schedule",
    "warmup_epochs", "patience", "flip", "rotate_deg", "shift", "scale", "brightness",
    "contrast", "noise",
}  # fmt: skip


def random_keypoints(batch: int, k: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return size * 0.2 + torch.rand(batch, k, 2, generator=g) * size * 0.6


def test_every_family_is_registered_with_the_loop_settings() -> None:
    assert list_models() == FAMILIES
    for name in FAMILIES:
        family = get_family(name)
        assert family.head == ("heatmap" if name == "heatmap" else "regression")
        assert set(family.train_defaults) == TRAIN_KEYS
    sp = get_family("sp").train_defaults
    assert (sp["optimizer"], sp["lr"], sp["momentum"], sp["batch_size"]) == ("sgd", 0.01, 0.9, 128)
    assert get_family("lenet").train_defaults["optimizer"] == "adam"
    six = get_family("sixconv").train_defaults
    assert (six["optimizer"], six["lr"], six["schedule"]) == ("adam", 1e-3, "none")  # the class's
    for strong in ("resnet", "heatmap"):
        recipe = get_family(strong).train_defaults
        assert recipe["optimizer"] == "adamw" and recipe["schedule"] in ("cosine", "onecycle")


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize(("k", "size"), [(15, 96), (68, 128)])
def test_forward_and_predict_shapes(name: str, k: int, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_keypoints=k, input_size=size).eval()
    images = torch.rand(2, 1, size, size)
    with torch.no_grad():
        output = model(images)
        points = model.predict_keypoints(images)
    assert output.shape == (2, *model.codec.output_shape)
    assert points.shape == (2, k, 2) and torch.isfinite(points).all()
    # Heads start at the image centre, so early training is stable.
    assert torch.allclose(points, torch.full_like(points, (size - 1) / 2), atol=1e-3)
    assert model.family == name and model.hparams == get_family(name).model_defaults


def test_model_hyperparameters_change_the_architecture() -> None:
    def n_params(name: str, **hp: object) -> int:
        return sum(p.numel() for p in create_model(name, 15, 96, **hp).parameters())

    assert n_params("resnet", depth=34) > n_params("resnet", depth=18)
    assert n_params("resnet", width=16) < n_params("resnet", width=32)
    assert n_params("convbn", batchnorm=False) < n_params("convbn")
    assert n_params("convbn", bias=True) > n_params("convbn")
    assert create_model("heatmap", 15, 96, stride=4, depth=3).codec.output_shape == (15, 24, 24)
    assert create_model("heatmap", 15, 96, stride=1, depth=3).codec.output_shape == (15, 96, 96)


@pytest.mark.device
@pytest.mark.parametrize("name", FAMILIES)
def test_one_step_reduces_the_loss(name: str, device: torch.device) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_keypoints=15, input_size=64).to(device)
    images = torch.rand(4, 1, 64, 64).to(device)
    keypoints = random_keypoints(4, 15, 64)
    keypoints[0, 3] = float("nan")
    keypoints = keypoints.to(device)
    targets, mask = model.codec.encode(keypoints)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        torch.manual_seed(1)  # the same dropout masks for both evaluations
        return model.codec.loss(model(images), targets, mask)

    before = loss()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss()
    assert torch.isfinite(before) and after < before


@pytest.mark.device
@pytest.mark.parametrize("name", FAMILIES)
def test_models_run_channels_last_and_under_bf16_autocast(name: str, device: torch.device) -> None:
    model = create_model(name, 5, 64).to(device, memory_format=torch.channels_last)
    images = torch.rand(2, 1, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    targets, mask = model.codec.encode(random_keypoints(2, 5, 64).to(device))
    with torch.autocast(device.type, dtype=torch.bfloat16):
        output = model(images)
        loss = model.codec.loss(output, targets, mask)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert model.codec.decode(output).dtype == torch.float32


def convs_and_map(model: torch.nn.Module, size: int) -> tuple[list[tuple[int, int]], int]:
    """(kernel, out channels) of each conv, and the side of the last feature map."""
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    pools = sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    return [(c.kernel_size[0], c.out_channels) for c in convs], size // 2**pools


@pytest.mark.parametrize(
    ("k", "size", "side", "low", "high"),
    [(15, 96, 6, 250_000, 400_000), (68, 128, 4, 150_000, 250_000), (58, 128, 4, 150_000, 250_000),
     (15, 64, 4, 120_000, 200_000), (3, 8, 4, 120_000, 200_000)],
)  # fmt: skip
def test_sixconv_is_six_convs_of_12_to_32_channels_at_any_size(
    k: int, size: int, side: int, low: int, high: int
) -> None:
    """Pooled after every conv until the map is 4 to 7 px, so the dense layers stay small."""
    model = create_model("sixconv", k, size)
    convs, last = convs_and_map(model, size)
    assert convs == [(5, 12), (5, 16), (3, 20), (3, 24), (3, 28), (3, 32)] and last == side
    dense = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [d.out_features for d in dense] == [256, 2 * k]  # two dense layers: hidden, head
    assert dense[0].in_features == 32 * side * side
    assert low <= sum(p.numel() for p in model.parameters()) <= high
    assert model(torch.rand(3, 1, size, size)).shape == (3, 2 * k)
    wide = create_model("sixconv", k, size, width=2.0, hidden=64)
    assert convs_and_map(wide, size)[0][-1] == (3, 64) and wide.network[1].in_features == 64


@pytest.mark.parametrize("size", [96, 128])
def test_sixconv_learns_a_tiny_batch_with_its_own_recipe(size: int) -> None:
    """25 steps of the family's optimiser (Adam, lr 1e-3) on 8 noise images: past the mean face
    (where the loss first settles) to fitting the batch, at under half the first loss."""
    torch.manual_seed(0)
    model = create_model("sixconv", 5, size)
    images = torch.rand(8, 1, size, size)
    keypoints = random_keypoints(8, 5, size, seed=2)
    keypoints[1, 2] = float("nan")
    targets, mask = model.codec.encode(keypoints)
    recipe = get_family("sixconv").train_defaults
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"])
    losses = []
    for _ in range(25):
        loss = model.codec.loss(model(images), targets, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert min(losses[-5:]) < 0.5 * losses[0]


def test_wrong_image_size_is_a_clear_error() -> None:
    model = create_model("lenet", 15, 96)
    with pytest.raises(KitError, match=r"expects images of shape \(B, 1, 96, 96\)"):
        model(torch.rand(2, 1, 64, 64))


# ---- codecs ---------------------------------------------------------------------------------


def test_regression_codec_round_trip_is_exact() -> None:
    codec = RegressionCodec(15, 96)
    keypoints = random_keypoints(3, 15, 96)
    targets, mask = codec.encode(keypoints)
    assert mask.all() and targets.abs().max() < 1
    # The pixel-centre convention: pixel 0 -> -1 + 1/S, pixel S-1 -> 1 - 1/S.
    edge = torch.tensor([[[0.0, 95.0]]]).expand(1, 15, 2)
    assert torch.allclose(codec.encode(edge)[0][0, 0], torch.tensor([-1 + 1 / 96, 1 - 1 / 96]))
    assert torch.allclose(codec.decode(targets.reshape(3, -1)), keypoints, atol=1e-5)


@pytest.mark.parametrize(("stride", "tolerance"), [(1, 0.05), (2, 0.05), (4, 0.1)])
def test_heatmap_codec_decodes_a_gaussian_back_to_its_keypoint(
    stride: int, tolerance: float
) -> None:
    codec = HeatmapCodec(15, 96, stride=stride, sigma=2.0)
    keypoints = random_keypoints(4, 15, 96, seed=stride)  # 19-77 px: away from the border
    targets, _ = codec.encode(keypoints)
    maps = codec.heatmaps(targets)
    assert maps.shape == (4, 15, 96 // stride, 96 // stride)
    assert torch.allclose(maps.sum(dim=(-2, -1)), torch.ones(4, 15))
    # The map peaks at the keypoint's cell...
    peak = maps.flatten(2).argmax(-1)
    cells = torch.stack([peak % maps.shape[-1], peak // maps.shape[-1]], -1).float()
    assert (codec.from_grid(cells) - keypoints).abs().max() <= stride / 2 + 1e-4
    # ...and soft-argmax of the log-map (the logits that reproduce it) finds it to sub-pixel.
    decoded = codec.decode(torch.log(maps.clamp_min(1e-30)))
    assert (decoded - keypoints).abs().max() < tolerance


def test_heatmap_decode_is_stable_for_huge_logits() -> None:
    codec = HeatmapCodec(2, 32, stride=1)
    logits = torch.zeros(1, 2, 32, 32)
    logits[0, 0, 5, 7] = 1e6  # a one-hot map at x=7, y=5
    logits[0, 1] = -1e6  # a flat map: the expectation is the centre
    decoded = codec.decode(logits)
    assert torch.isfinite(decoded).all()
    assert torch.allclose(decoded[0], torch.tensor([[7.0, 5.0], [15.5, 15.5]]))


def test_learnable_beta_is_a_parameter_that_gets_gradients() -> None:
    model = create_model("heatmap", 15, 96, learn_beta=True, beta=2.0)
    assert any(p is model.codec.log_beta for p in model.parameters())
    assert model.codec.beta.item() == pytest.approx(2.0)
    assert "codec.log_beta" in model.state_dict()
    targets, mask = model.codec.encode(random_keypoints(2, 15, 96))
    output = torch.randn(2, *model.codec.output_shape)
    model.codec.loss(output, targets, mask).backward()
    assert model.codec.log_beta.grad is not None and model.codec.log_beta.grad != 0


CODECS = {
    "regression-mse": lambda: RegressionCodec(5, 32, loss="mse"),
    "regression-smooth_l1": lambda: RegressionCodec(5, 32, loss="smooth_l1"),
    "regression-l1": lambda: RegressionCodec(5, 32, loss="l1"),
    "regression-wing": lambda: RegressionCodec(5, 32, loss="wing"),
    "regression-soft_wing": lambda: RegressionCodec(5, 32, loss="soft_wing"),
    "heatmap-kl": lambda: HeatmapCodec(5, 32, stride=2),
    "heatmap-mse": lambda: HeatmapCodec(5, 32, stride=2, heatmap_loss="mse"),
}


@pytest.mark.device
@pytest.mark.parametrize("make_codec", CODECS.values(), ids=CODECS.keys())
def test_masked_loss_ignores_missing_keypoints(make_codec, device: torch.device) -> None:
    codec = make_codec().to(device)
    keypoints = random_keypoints(3, 5, 32)
    keypoints[0, 1] = float("nan")
    keypoints[2, 4] = float("nan")
    targets, mask = codec.encode(keypoints.to(device))
    assert mask.sum() == 13 and not mask[0, 1] and not mask[2, 4]
    output = torch.randn(3, *codec.output_shape, device=device, requires_grad=True)

    loss = codec.loss(output, targets, mask)
    changed = targets.clone()
    changed[0, 1] = 7.0
    changed[2, 4] = float("nan")
    assert codec.loss(output, changed, mask).item() == loss.item()

    loss.backward()
    grad = output.grad.reshape(3, 5, -1)
    assert (grad[0, 1] == 0).all() and (grad[2, 4] == 0).all()
    assert (grad[mask].abs().sum(-1) > 0).all()


def old_masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """masked_mean as it was before loss weights: the reference for bit-identity."""
    per_keypoint = values.flatten(2).mean(dim=2) if values.dim() > 2 else values
    weights = mask.to(per_keypoint.dtype)
    return (per_keypoint * weights).sum() / weights.sum().clamp_min(1.0)


@pytest.mark.parametrize("make_codec", CODECS.values(), ids=CODECS.keys())
def test_loss_without_weights_is_bit_identical_to_the_unweighted_loss(
    make_codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    codec = make_codec()
    keypoints = random_keypoints(4, 5, 32, seed=3)
    keypoints[1, 2] = keypoints[3, 0] = float("nan")
    targets, mask = codec.encode(keypoints)
    output = torch.randn(4, *codec.output_shape, generator=torch.Generator().manual_seed(1))
    plain = codec.loss(output, targets, mask)
    assert codec.loss(output, targets, mask, None).item() == plain.item()
    # Every weight 1 is the same arithmetic: the very same float.
    assert codec.loss(output, targets, mask, torch.ones(4, 5)).item() == plain.item()
    monkeypatch.setattr(codec_module, "masked_mean", lambda v, m, w=None: old_masked_mean(v, m))
    assert codec.loss(output, targets, mask).item() == plain.item()


@pytest.mark.parametrize("make_codec", CODECS.values(), ids=CODECS.keys())
def test_a_keypoint_of_weight_zero_counts_as_a_masked_one(make_codec) -> None:
    codec = make_codec()
    keypoints = random_keypoints(3, 5, 32, seed=4)
    targets, mask = codec.encode(keypoints)
    weights = torch.ones(3, 5)
    weights[0, 1] = weights[2, 3] = 0.0
    masked = mask.clone()
    masked[0, 1] = masked[2, 3] = False
    output = torch.randn(3, *codec.output_shape, requires_grad=True)
    weighted = codec.loss(output, targets, mask, weights)
    assert weighted.item() == codec.loss(output, targets, masked).item()
    weighted.backward()
    grad = output.grad.reshape(3, 5, -1)
    assert (grad[0, 1] == 0).all() and (grad[2, 3] == 0).all() and grad[1].abs().sum() > 0
    assert codec.loss(output, targets, mask, torch.zeros(3, 5)).item() == 0.0


def test_weights_make_a_weighted_mean_over_labelled_keypoints() -> None:
    codec = RegressionCodec(3, 32, loss="mse")
    keypoints = random_keypoints(2, 3, 32, seed=5)
    keypoints[1, 0] = float("nan")
    targets, mask = codec.encode(keypoints)
    output = torch.randn(2, 6)
    weights = torch.tensor([[1.0, 0.5, 0.5], [9.0, 1.0, 0.25]])  # 9.0 falls on a missing one
    per_keypoint = ((output.reshape(2, 3, 2) - targets) ** 2).mean(-1)
    used = torch.where(mask, weights, 0.0)
    expected = (per_keypoint * used).sum() / used.sum()
    got = codec.loss(output, targets, mask, weights)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(KitError, match="loss weights have shape"):
        codec.loss(output, targets, mask, torch.ones(2, 2))


@pytest.mark.device
def test_regression_loss_averages_over_labelled_coordinates(device: torch.device) -> None:
    codec = RegressionCodec(4, 32, loss="mse").to(device)
    keypoints = random_keypoints(2, 4, 32)
    keypoints[1, 1:] = float("nan")  # 5 labelled keypoints = 10 coordinates out of 16
    targets, mask = codec.encode(keypoints.to(device))
    output = torch.randn(2, 8, device=device)
    squared = (output.reshape(2, 4, 2) - targets) ** 2
    expected = squared[mask].sum() / 10
    assert codec.loss(output, targets, mask).item() == pytest.approx(expected.item(), rel=1e-6)
    none = torch.zeros_like(mask)
    assert codec.loss(output, targets, none).item() == 0.0


def regression_loss_at(codec: RegressionCodec, pixels: torch.Tensor) -> torch.Tensor:
    """The codec's loss for one keypoint whose x and y are both off by `pixels` (1-D), each."""
    keypoints = torch.full((len(pixels), 1, 2), 40.0)
    targets, mask = codec.encode(keypoints)
    error = pixels.reshape(-1, 1, 1) * (2.0 / codec.input_size)  # pixels -> normalised units
    output = (targets + error).reshape(len(pixels), 2)
    return torch.stack(
        [
            codec.loss(o[None], t[None], m[None])
            for o, t, m in zip(output, targets, mask, strict=True)
        ]
    )


@pytest.mark.parametrize("size", [96, 128])
def test_wing_losses_follow_the_papers_in_pixels(size: int) -> None:
    """In pixels (normalised loss x S/2): wing (w 10, epsilon 2) is w ln(1 + x/epsilon) up to
    10 px, then linear and continuous; soft wing is |x| up to 2 px, then 20 ln(1 + x/0.5) + B."""
    pixels = torch.tensor([0.5, 1.0, 5.0, 10.0 - 1e-4, 10.0 + 1e-4, 30.0])
    to_pixels = size / 2.0
    wing = regression_loss_at(RegressionCodec(1, size, loss="wing"), pixels) * to_pixels
    expected = torch.where(
        pixels < 10, 10 * torch.log(1 + pixels / 2), pixels - (10 - 10 * math.log(6))
    )
    torch.testing.assert_close(wing, expected, rtol=1e-4, atol=1e-4)
    assert wing[3] == pytest.approx(wing[4].item(), abs=1e-3)  # continuous at w

    soft = regression_loss_at(RegressionCodec(1, size, loss="soft_wing"), pixels) * to_pixels
    torch.testing.assert_close(soft[:2], pixels[:2], rtol=1e-4, atol=1e-4)  # |x| below omega1
    b = 2 - 20 * math.log(1 + 2 / 0.5)
    torch.testing.assert_close(
        soft[2:], 20 * torch.log(1 + pixels[2:] / 0.5) + b, rtol=1e-4, atol=1e-4
    )
    near = regression_loss_at(
        RegressionCodec(1, size, loss="soft_wing"), torch.tensor([2 - 1e-5, 2 + 1e-5])
    )
    assert near[0].item() * to_pixels == pytest.approx(near[1].item() * to_pixels, abs=1e-3)


def test_wing_is_steeper_than_l1_for_small_errors() -> None:
    """Wing's point: small and medium errors keep a large gradient (w/epsilon = 5 x L1's)."""
    grads = {}
    for loss in ("l1", "wing", "soft_wing"):
        codec = RegressionCodec(1, 96, loss=loss)
        targets, mask = codec.encode(torch.full((1, 1, 2), 40.0))
        output = (targets + 0.1 * 2 / 96).reshape(1, 2).requires_grad_(True)  # 0.1 px off
        codec.loss(output, targets, mask).backward()
        grads[loss] = output.grad.abs().sum().item()
    assert grads["wing"] > 4 * grads["l1"]
    assert grads["soft_wing"] == pytest.approx(grads["l1"])  # linear near 0: no dead zone


@pytest.mark.parametrize("name", [f for f in FAMILIES if f != "heatmap"])
def test_every_regression_family_takes_the_wing_losses(name: str) -> None:
    for loss in ("wing", "soft_wing"):
        assert create_model(name, 15, 96, loss=loss).codec.loss_name == loss


@pytest.mark.device
def test_heatmap_loss_is_smallest_at_the_truth(device: torch.device) -> None:
    codec = HeatmapCodec(3, 32, stride=2, sigma=2.0).to(device)
    targets, mask = codec.encode(random_keypoints(2, 3, 32).to(device))
    exact = torch.log(codec.heatmaps(targets).clamp_min(1e-30))
    shifted = torch.log(codec.heatmaps(targets + 1.0).clamp_min(1e-30))
    assert codec.loss(exact, targets, mask) < 1e-3
    assert codec.loss(shifted, targets, mask) > codec.loss(exact, targets, mask) + 0.5


def test_codecs_reject_wrong_shapes_and_settings() -> None:
    with pytest.raises(KitError, match="keypoints have shape"):
        RegressionCodec(15, 96).encode(torch.zeros(2, 14, 2))
    with pytest.raises(KitError, match="head output has shape"):
        RegressionCodec(15, 96).decode(torch.zeros(2, 28))
    with pytest.raises(KitError, match="unknown regression loss"):
        RegressionCodec(15, 96, loss="huber2")
    with pytest.raises(KitError, match="does not divide"):
        HeatmapCodec(15, 96, stride=5)
    with pytest.raises(KitError, match=r"unknown heatmap decode 'dsnt'.*soft_argmax, dark"):
        create_model("heatmap", 15, 96, decode="dsnt")


def argmax_cells(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.flatten(2).argmax(-1)
    return torch.stack([peak % maps.shape[-1], peak // maps.shape[-1]], -1).float()


@pytest.mark.parametrize(("stride", "sigma"), [(4, 2.0), (2, 2.0), (4, 4.0)])
def test_dark_finds_sub_pixel_gaussian_centres(stride: int, sigma: float) -> None:
    codec = HeatmapCodec(15, 96, stride=stride, sigma=sigma, decode="dark")
    keypoints = random_keypoints(8, 15, 96, seed=stride)  # sub-pixel, away from the border
    targets, _ = codec.encode(keypoints)
    maps = codec.heatmaps(targets)
    decoded = codec.decode(torch.log(maps.clamp_min(1e-30)))
    error = (codec.to_grid(decoded) - targets).abs()  # in cells
    argmax_error = (argmax_cells(maps) - targets).abs()
    assert error.max() < 0.1
    assert error.mean() < argmax_error.mean() / 4


def test_dark_and_soft_argmax_agree_on_a_centred_narrow_gaussian() -> None:
    soft = HeatmapCodec(2, 96, stride=4, sigma=2.0)
    dark = HeatmapCodec(2, 96, stride=4, sigma=2.0, decode="dark")
    keypoints = torch.tensor([[[47.5, 47.5], [45.2, 49.3]]])  # the centre, and 2 px off it
    logits = torch.log(soft.heatmaps(soft.encode(keypoints)[0]).clamp_min(1e-30))
    torch.testing.assert_close(soft.decode(logits), keypoints, atol=0.05, rtol=0)
    torch.testing.assert_close(dark.decode(logits), soft.decode(logits), atol=0.1, rtol=0)
    assert soft.state_dict().keys() == dark.state_dict().keys()  # decode holds no weights


def test_dark_keeps_the_argmax_where_the_taylor_step_is_undefined() -> None:
    """A one-hot map (huge logits) decodes to its cell; a peak on the border and a flat map
    (no maximum to step to) keep the argmax cell; nothing is NaN."""
    codec = HeatmapCodec(3, 32, stride=1, decode="dark")
    logits = torch.zeros(1, 3, 32, 32)
    logits[0, 0, 5, 7] = 1e6  # inside: x=7, y=5
    logits[0, 1, 0, 9] = 50.0  # on the top border
    logits[0, 2] = -1e6  # flat: the argmax is cell (0, 0)
    decoded = codec.decode(logits)
    assert torch.isfinite(decoded).all()
    torch.testing.assert_close(decoded[0], torch.tensor([[7.0, 5.0], [9.0, 0.0], [0.0, 0.0]]))


# ---- registry -------------------------------------------------------------------------------


def test_unknown_model_lists_the_families() -> None:
    with pytest.raises(
        KitError, match=r"unknown model 'vgg'.*convbn, heatmap, lenet, resnet, sixconv, sp"
    ):
        create_model("vgg", 15, 96)


def test_unknown_hyperparameter_lists_the_known_ones() -> None:
    with pytest.raises(KitError, match=r"unknown model hyperparameter widht.*width"):
        create_model("resnet", 15, 96, widht=16)
    with pytest.raises(KitError, match="depth 50"):
        create_model("resnet", 15, 96, depth=50)


def test_duplicate_registration_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))
    with pytest.raises(KitError, match="'sp' is already registered"):
        register_model("sp", model_defaults={}, train_defaults={}, search_space=dict)(
            lambda num_keypoints, input_size: None
        )
    with pytest.raises(KitError, match="differ from model_defaults"):
        register_model("tiny", model_defaults={"width": 8}, train_defaults={}, search_space=dict)(
            lambda num_keypoints, input_size, depth: None
        )
    assert "tiny" not in list_models()


def test_a_new_family_is_one_decorated_builder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))

    @register_model(
        "linear", model_defaults={"scale": 1.0}, train_defaults={"lr": 0.1}, search_space=dict
    )
    def build_linear(num_keypoints: int, input_size: int, scale: float):
        network = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(input_size**2, 2 * num_keypoints)
        )
        return registry_module.KeypointModel(network, RegressionCodec(num_keypoints, input_size))

    model = create_model("linear", 3, 8, scale=2.0)
    assert model.hparams == {"scale": 2.0, "input_scale": 1.0}  # and the shared settings
    assert model(torch.rand(1, 1, 8, 8)).shape == (1, 6)
    assert get_family("linear").split({"scale": 3.0, "lr": 0.5}) == ({"scale": 3.0}, {"lr": 0.5})
    with pytest.raises(KitError, match="unknown hyperparameter nope"):
        get_family("linear").split({"nope": 1})


@pytest.mark.parametrize("name", FAMILIES)
def test_search_space_samples_buildable_configs(name: str) -> None:
    family = get_family(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        trial = study.ask()
        params = family.search_space(trial)
        model_hp, train_hp = family.split(params)
        assert set(model_hp) | set(train_hp) == set(params) and model_hp and train_hp
        assert math.log10(train_hp["lr"]) < -1
        create_model(name, 15, 96, **model_hp)
        create_model(name, 68, 128, **model_hp)
        study.tell(trial, 1.0)
    fixed = optuna.trial.FixedTrial(study.best_params)
    assert family.search_space(fixed) == study.best_params


def test_regression_prior_makes_a_fresh_head_start_at_the_mean_face():
    torch.manual_seed(0)
    model = create_model("lenet", 3, 32)
    mean = torch.tensor([[10.0, 12.0], [21.0, 12.5], [float("nan"), 20.0]])
    model.codec.set_prior(mean)
    with torch.no_grad():
        for p in model.network.parameters():
            p.zero_()  # a head that outputs 0 now predicts the prior
        pred = model.predict_keypoints(torch.rand(2, 1, 32, 32))
    expected = torch.tensor([[10.0, 12.0], [21.0, 12.5], [15.5, 20.0]])  # NaN -> image centre
    torch.testing.assert_close(pred, expected.expand(2, 3, 2), atol=1e-4, rtol=0)
    points = torch.tensor([[[3.0, 4.0], [28.0, 9.0], [16.0, float("nan")]]])
    targets, mask = model.codec.encode(points)
    assert mask.tolist() == [[True, True, False]]
    torch.testing.assert_close(model.codec.decode(targets.reshape(1, -1))[0, :2], points[0, :2])
    state = model.state_dict()
    assert "codec.prior" in state  # saved with each fold's checkpoint
