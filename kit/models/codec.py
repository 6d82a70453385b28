"""Keypoint codecs: how targets are encoded, predictions decoded and losses computed (MMPose-style).

One codec belongs to each model (``model.codec``); training and prediction share it, so a head's
output never needs family-specific code in the loop.

Coordinate conventions (exact, shared with kit.training.augment):
    pixel x is the centre of the x-th pixel column, 0-based, in input pixels of an S x S image;
    normalised u = (x + 0.5) / S * 2 - 1, so pixel centres span (-1, 1) (align_corners=False);
    a heatmap at stride s has cell j centred on input pixel j * s + (s - 1) / 2,
    i.e. grid coordinate g = (x + 0.5) / s - 0.5.

All computations run in float32, also when the model ran under bf16 autocast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kit.errors import KitError

REGRESSION_LOSSES = ("mse", "smooth_l1", "l1", "wing", "soft_wing")
HEATMAP_LOSSES = ("kl", "mse")
HEATMAP_DECODES = ("soft_argmax", "dark")
# The papers' settings, in input pixels; RegressionCodec converts them to its normalised units
# (x 2 / input_size: 1 px is 2/96 at 96 px). Wing (Feng et al. 2018): w, epsilon.
WING_PX = (10.0, 2.0)
# Soft wing (Lin et al. 2021, as MMPose's SoftWingLoss): omega1, omega2, epsilon.
SOFT_WING_PX = (2.0, 20.0, 0.5)


def keypoint_mask(keypoints: Tensor) -> Tensor:
    """(B, K) bool: both coordinates of the keypoint are labelled (not NaN)."""
    return ~torch.isnan(keypoints).any(dim=-1)


def wing_loss(error: Tensor, width: float, epsilon: float) -> Tensor:
    """Wing loss of absolute errors: w ln(1 + |x| / epsilon) below `width` (steep for small
    errors), |x| - C beyond it (C makes the two pieces meet)."""
    c = width - width * math.log1p(width / epsilon)
    return torch.where(error < width, width * torch.log1p(error / epsilon), error - c)


def soft_wing_loss(error: Tensor, omega1: float, omega2: float, epsilon: float) -> Tensor:
    """Soft wing loss of absolute errors: |x| below `omega1` (no dead zone around 0), then
    omega2 ln(1 + |x| / epsilon) + B (B makes the two pieces meet)."""
    b = omega1 - omega2 * math.log1p(omega1 / epsilon)
    return torch.where(error < omega1, error, omega2 * torch.log1p(error / epsilon) + b)


def masked_mean(values: Tensor, mask: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean of `values` (B, K, ...) over the keypoints where `mask` (B, K) is True.

    Each keypoint contributes the mean of its trailing entries; masked entries contribute exactly
    nothing, neither to the value nor to the gradient. An empty mask gives 0 (still differentiable).

    `weights` (B, K), optional: each keypoint's contribution is multiplied by its weight and the
    sum is divided by the weights' sum over the mask (a weighted mean; pseudo labels train at a
    weight below 1). A keypoint of weight 0 counts exactly as a masked one; all weights 0 give 0.
    Without `weights` the result is bit for bit the unweighted mean.
    """
    per_keypoint = values.flatten(2).mean(dim=2) if values.dim() > 2 else values
    if weights is None:
        counted = mask.to(per_keypoint.dtype)
        return (per_keypoint * counted).sum() / counted.sum().clamp_min(1.0)
    if tuple(weights.shape) != tuple(mask.shape):
        shapes = f"{tuple(weights.shape)}, the mask {tuple(mask.shape)}"
        raise KitError(f"loss weights have shape {shapes}")
    counted = torch.where(mask, weights.to(per_keypoint.dtype), 0.0)
    total = counted.sum()
    return (per_keypoint * counted).sum() / torch.where(total > 0, total, 1.0)


class KeypointCodec(nn.Module):
    """Encodes keypoints into training targets, decodes head outputs, and scores them.

    A module so that codec buffers and learnable parameters (a soft-argmax temperature)
    follow the model across devices and into its state_dict.
    """

    def __init__(self, num_keypoints: int, input_size: int):
        super().__init__()
        if num_keypoints < 1 or input_size < 1:
            raise KitError(f"bad codec size: {num_keypoints} keypoints, input {input_size} px")
        self.num_keypoints = num_keypoints
        self.input_size = input_size

    def set_prior(self, mean_keypoints: Tensor) -> None:
        """Tell the codec the training rows' mean shape (K, 2) in pixels (NaN: unknown).
        Heads that localise by themselves ignore it."""

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The head's output shape per sample (without the batch dimension)."""
        raise NotImplementedError

    def encode(self, keypoints: Tensor) -> tuple[Tensor, Tensor]:
        """(B, K, 2) input pixels with NaN -> (targets, mask (B, K) bool)."""
        raise NotImplementedError

    def decode(self, output: Tensor) -> Tensor:
        """Head output -> (B, K, 2) input pixels."""
        raise NotImplementedError

    def loss(
        self, output: Tensor, targets: Tensor, mask: Tensor, weights: Tensor | None = None
    ) -> Tensor:
        """Scalar loss over labelled keypoints only; `weights` (B, K) weigh each keypoint's
        term (see `masked_mean`), None = every labelled keypoint counts the same."""
        raise NotImplementedError

    def _check_keypoints(self, keypoints: Tensor) -> None:
        expected = (self.num_keypoints, 2)
        if keypoints.dim() != 3 or tuple(keypoints.shape[1:]) != expected:
            raise KitError(
                f"keypoints have shape {tuple(keypoints.shape)}, the codec expects (B, *{expected})"
            )

    def _check_output(self, output: Tensor) -> None:
        if tuple(output.shape[1:]) != self.output_shape:
            raise KitError(
                f"head output has shape {tuple(output.shape)}, "
                f"the codec expects (B, *{self.output_shape})"
            )


class RegressionCodec(KeypointCodec):
    """Direct regression of normalised coordinates: the head outputs (B, 2K) values in ~[-1, 1].

    loss: "mse", "smooth_l1" (`huber_beta` in normalised units: 0.02 is ~1 px at 96 px), "l1",
    "wing" or "soft_wing" (the papers' pixel settings, WING_PX and SOFT_WING_PX, converted to
    normalised units at this input size), averaged over the labelled coordinates (not B x K).
    """

    def __init__(
        self, num_keypoints: int, input_size: int, loss: str = "mse", huber_beta: float = 0.02
    ):
        super().__init__(num_keypoints, input_size)
        if loss not in REGRESSION_LOSSES:
            raise KitError(f"unknown regression loss {loss!r}", hint=f"use {REGRESSION_LOSSES}")
        self.loss_name = loss
        self.huber_beta = huber_beta
        pixel = 2.0 / input_size  # one input pixel in normalised units
        self.wing = tuple(v * pixel for v in WING_PX)
        self.soft_wing = tuple(v * pixel for v in SOFT_WING_PX)
        # The head predicts the offset from this normalised mean shape (zero until set_prior), so
        # a fresh network starts at the mean face instead of the image centre.
        self.register_buffer("prior", torch.zeros(num_keypoints, 2))

    def set_prior(self, mean_keypoints: Tensor) -> None:
        prior = self.normalise(mean_keypoints.float().to(self.prior.device))
        self.prior.copy_(torch.nan_to_num(prior, nan=0.0).reshape(self.prior.shape))

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (2 * self.num_keypoints,)

    def normalise(self, pixels: Tensor) -> Tensor:
        return (pixels + 0.5) * (2.0 / self.input_size) - 1.0

    def denormalise(self, values: Tensor) -> Tensor:
        return (values + 1.0) * (self.input_size / 2.0) - 0.5

    def encode(self, keypoints: Tensor) -> tuple[Tensor, Tensor]:
        """-> targets (B, K, 2) normalised, 0 where missing; mask (B, K)."""
        self._check_keypoints(keypoints)
        mask = keypoint_mask(keypoints)
        offsets = self.normalise(keypoints.float()) - self.prior
        targets = torch.where(mask[..., None], offsets, 0.0)
        return targets, mask

    def decode(self, output: Tensor) -> Tensor:
        self._check_output(output)
        return self.denormalise(output.float().reshape(-1, self.num_keypoints, 2) + self.prior)

    def loss(
        self, output: Tensor, targets: Tensor, mask: Tensor, weights: Tensor | None = None
    ) -> Tensor:
        self._check_output(output)
        pred = output.float().reshape(-1, self.num_keypoints, 2)
        # Missing targets become the prediction itself: zero loss and exactly zero gradient there.
        safe = torch.where(mask[..., None], targets.float(), pred.detach())
        if self.loss_name == "mse":
            element = F.mse_loss(pred, safe, reduction="none")
        elif self.loss_name == "smooth_l1":
            element = F.smooth_l1_loss(pred, safe, reduction="none", beta=self.huber_beta)
        elif self.loss_name == "wing":
            element = wing_loss((pred - safe).abs(), *self.wing)
        elif self.loss_name == "soft_wing":
            element = soft_wing_loss((pred - safe).abs(), *self.soft_wing)
        else:
            element = F.l1_loss(pred, safe, reduction="none")
        return masked_mean(element, mask, weights)


class HeatmapCodec(KeypointCodec):
    """One heatmap per keypoint at `stride`, decoded by soft-argmax (integral regression).

    The head outputs logits (B, K, S/stride, S/stride); decode takes the expectation of the grid
    coordinates under softmax(beta * logits), which is differentiable and sub-pixel. With
    ``decode="dark"`` prediction refines the argmax cell instead (`dark_cells`); training, whose
    loss always uses soft-argmax, is the same, so one trained model can be decoded both ways.

    encode returns the keypoints in heatmap-grid coordinates (B, K, 2); the Gaussian target
    heatmaps are rendered from them inside `loss`, on the output's device (`heatmaps(targets)`),
    so no (B, K, H, W) target tensor is built on the host or moved, and the coordinate term
    uses the exact keypoint, also near or beyond the image border where a Gaussian is truncated.

    loss = heatmap_weight * (KL(target || softmax) or MSE of the two, peak-normalised)
         + coord_weight * L1 of the soft-argmax coordinates in input pixels,
    both averaged over labelled keypoints.

    sigma is the target Gaussian's standard deviation in input pixels.
    """

    def __init__(
        self,
        num_keypoints: int,
        input_size: int,
        stride: int = 2,
        sigma: float = 2.0,
        beta: float = 1.0,
        learn_beta: bool = False,
        heatmap_loss: str = "kl",
        heatmap_weight: float = 1.0,
        coord_weight: float = 1.0,
        decode: str = "soft_argmax",
    ):
        super().__init__(num_keypoints, input_size)
        if stride < 1 or input_size % stride:
            raise KitError(f"heatmap stride {stride} does not divide the input size {input_size}")
        if sigma <= 0 or beta <= 0:
            raise KitError(f"heatmap sigma ({sigma}) and beta ({beta}) must be positive")
        if heatmap_loss not in HEATMAP_LOSSES:
            raise KitError(f"unknown heatmap loss {heatmap_loss!r}", hint=f"use {HEATMAP_LOSSES}")
        if decode not in HEATMAP_DECODES:
            raise KitError(
                f"unknown heatmap decode {decode!r}", hint=f"use {', '.join(HEATMAP_DECODES)}"
            )
        self.decode_mode = decode
        self.stride = stride
        self.size = input_size // stride
        self.sigma = sigma
        self.heatmap_loss = heatmap_loss
        self.heatmap_weight = heatmap_weight
        self.coord_weight = coord_weight
        log_beta = torch.tensor(math.log(beta))
        if learn_beta:
            self.log_beta = nn.Parameter(log_beta)
        else:
            self.register_buffer("log_beta", log_beta)
        self.register_buffer("grid", torch.arange(self.size, dtype=torch.float32), persistent=False)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return (self.num_keypoints, self.size, self.size)

    @property
    def beta(self) -> Tensor:
        return self.log_beta.exp()

    def to_grid(self, pixels: Tensor) -> Tensor:
        return (pixels + 0.5) / self.stride - 0.5

    def from_grid(self, cells: Tensor) -> Tensor:
        return (cells + 0.5) * self.stride - 0.5

    def encode(self, keypoints: Tensor) -> tuple[Tensor, Tensor]:
        """-> targets (B, K, 2) in heatmap-grid coordinates, 0 where missing; mask (B, K)."""
        self._check_keypoints(keypoints)
        mask = keypoint_mask(keypoints)
        targets = torch.where(mask[..., None], self.to_grid(keypoints.float()), 0.0)
        return targets, mask

    def heatmaps(self, targets: Tensor) -> Tensor:
        """Gaussian target distributions (B, K, H, W), each summing to 1 over the grid.

        Built separably from two 1-D Gaussians; a keypoint far outside the grid gives an
        all-zero map (it then only counts through the coordinate term).
        """
        sigma = self.sigma / self.stride
        grid = self.grid.to(targets.device)
        gx = torch.exp(-0.5 * ((grid - targets[..., 0:1]) / sigma) ** 2)  # (B, K, W)
        gy = torch.exp(-0.5 * ((grid - targets[..., 1:2]) / sigma) ** 2)  # (B, K, H)
        maps = gy[..., :, None] * gx[..., None, :]
        return maps / maps.sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)

    def log_probabilities(self, output: Tensor) -> Tensor:
        """log softmax(beta * logits) over each heatmap, (B, K, H, W), stable in float32."""
        logits = output.float().flatten(2) * self.beta
        return F.log_softmax(logits, dim=-1).reshape(output.shape)

    def expected_cells(self, probabilities: Tensor) -> Tensor:
        """Soft-argmax of probability maps (B, K, H, W) -> (B, K, 2) grid coordinates."""
        grid = self.grid.to(probabilities.device)
        x = (probabilities.sum(dim=-2) * grid).sum(dim=-1)
        y = (probabilities.sum(dim=-1) * grid).sum(dim=-1)
        return torch.stack([x, y], dim=-1)

    def dark_cells(self, probabilities: Tensor) -> Tensor:
        """DARK (Zhang et al. 2020) of probability maps (B, K, H, W) -> (B, K, 2) grid coordinates.

        Smooth each map with the target's Gaussian (a network's map is only roughly Gaussian),
        take its log, and from the argmax cell step to the maximum of the second-order Taylor
        expansion there: offset = -H^-1 g, from central differences, clamped to one cell. Where
        the Hessian is not negative definite, or the argmax lies on the border (no neighbour),
        the argmax cell itself is kept.
        """
        height, width = probabilities.shape[-2:]
        log_map = self.smooth(probabilities).clamp_min(1e-30).log()
        peak = log_map.flatten(2).argmax(dim=-1)  # (B, K)
        x, y = peak % width, peak // width
        padded = F.pad(log_map, (1, 1, 1, 1), mode="replicate").flatten(2)

        def at(dx: int, dy: int) -> Tensor:  # log_map[y + dy, x + dx] for every map
            index = (y + 1 + dy) * (width + 2) + (x + 1 + dx)
            return padded.gather(-1, index.unsqueeze(-1)).squeeze(-1)

        centre = at(0, 0)
        gx, gy = 0.5 * (at(1, 0) - at(-1, 0)), 0.5 * (at(0, 1) - at(0, -1))
        hxx = at(1, 0) - 2 * centre + at(-1, 0)
        hyy = at(0, 1) - 2 * centre + at(0, -1)
        hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
        det = hxx * hyy - hxy**2
        inside = (x > 0) & (x < width - 1) & (y > 0) & (y < height - 1)
        usable = inside & (hxx < 0) & (det > 0)  # a negative definite Hessian: a maximum
        det = torch.where(usable, det, 1.0)
        dx = torch.where(usable, -(hyy * gx - hxy * gy) / det, 0.0).clamp(-1.0, 1.0)
        dy = torch.where(usable, -(hxx * gy - hxy * gx) / det, 0.0).clamp(-1.0, 1.0)
        return torch.stack([x + dx, y + dy], dim=-1)

    def smooth(self, maps: Tensor) -> Tensor:
        """Maps (B, K, H, W) blurred by a Gaussian of the target's sigma in cells (separable)."""
        sigma = self.sigma / self.stride
        radius = max(1, math.ceil(3 * sigma))
        taps = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
        kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
        kernel = kernel / kernel.sum()
        batch, keypoints, height, width = maps.shape
        flat = F.pad(maps.reshape(-1, 1, height, width), (radius,) * 4, mode="replicate")
        flat = F.conv2d(flat, kernel.view(1, 1, 1, -1))
        flat = F.conv2d(flat, kernel.view(1, 1, -1, 1))
        return flat.reshape(batch, keypoints, height, width)

    def decode(self, output: Tensor) -> Tensor:
        self._check_output(output)
        probabilities = self.log_probabilities(output).exp()
        if self.decode_mode == "dark":
            return self.from_grid(self.dark_cells(probabilities))
        return self.from_grid(self.expected_cells(probabilities))

    def loss(
        self, output: Tensor, targets: Tensor, mask: Tensor, weights: Tensor | None = None
    ) -> Tensor:
        self._check_output(output)
        targets = torch.where(mask[..., None], targets.float(), 0.0)  # NaN-proof where unused
        log_p = self.log_probabilities(output)
        pred = self.from_grid(self.expected_cells(log_p.exp()))
        truth = self.from_grid(targets)
        # Missing targets become the prediction itself: exactly zero loss and gradient there.
        safe = torch.where(mask[..., None], truth, pred.detach())
        coord = masked_mean((pred - safe).abs(), mask, weights)
        target_maps = self.heatmaps(targets)
        if self.heatmap_loss == "kl":
            # KL(target || p) per keypoint; xlogy gives 0 where the target is 0.
            per_cell = torch.xlogy(target_maps, target_maps) - target_maps * log_p
            heat = masked_mean(per_cell.flatten(2).sum(-1), mask, weights)
        else:
            # Scale so that a target's peak is ~1: the MSE is then comparable across sigmas.
            peak = 2 * math.pi * (self.sigma / self.stride) ** 2
            element = ((log_p.exp() - target_maps) * peak) ** 2
            heat = masked_mean(element, mask, weights)
        return self.heatmap_weight * heat + self.coord_weight * coord
