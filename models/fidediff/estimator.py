"""FideDiff's kernel estimator M and blur-level regressor T, in the kernel-basis form.

M maps a blurry image to per-pixel ``m × m`` blur kernels. Each image gets ``R`` basis kernels (normalised
softplus over their ``m²`` taps) and every pixel a softmax mixture of them, so every per-pixel kernel is
non-negative and sums to one, yet the ``[m², H, W]`` map is never stored: reblurring is ``R``
convolutions blended by the mixing weights (:func:`..blur.convolve.blend_convolutions`), and the
kernel map at a coarse grid (the Kernel ControlNet's input at latent size) is the basis contracted with
average-pooled weights. Why this form and not a full ``m²`` softmax head: docs/fidediff_estimator.md.

T reads the kernel map pooled to a stride-:data:`LEVEL_STRIDE` grid and predicts the blur level (FideDiff's
timestep, ``t = 20·(n − 1)`` for an average of ``n`` frames, in ``[0, 400]``) for every cell; the image's
level is the mean, so the same pass gives a map of where the image is blurred and how much.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..blur.convolve import blend_convolutions, pad

KERNEL_SIZE = 19
LEVEL_MAX = 400.0
LOGIT_BOUND = 6.0  # mixing logits stay within ±6, so no basis kernel ever loses its gradient
LEVEL_STRIDE = 8  # pixels per cell of the grid T reads (the SD latent at d = 8)


@dataclass
class EstimatorConfig:
    kernel_size: int = KERNEL_SIZE  # m (odd)
    basis: int = 8  # R basis kernels per image
    widths: tuple[int, ...] = (16, 32, 64, 96)  # UNet levels; len - 1 stride-2 downsamplings
    blocks: int = 1  # residual blocks per level and side

    @property
    def multiple(self) -> int:
        return 2 ** (len(self.widths) - 1)


@dataclass
class RegressorConfig:
    kernel_size: int = KERNEL_SIZE
    width: int = 64
    layers: int = 3  # 3×3 convolutions over the kernel grid


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


def _stage(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*[ResBlock(channels) for _ in range(blocks)])


def normalized_kernels(raw: torch.Tensor) -> torch.Tensor:
    """Raw values → non-negative taps summing to one over the last axis. Softplus rather than softmax:
    a softmax saturates into a single tap (the identity kernel) whose gradients vanish, which is where
    reblur training got stuck; softplus keeps a gradient on every tap."""
    taps = F.softplus(raw.clamp(min=-30)) + 1e-6
    return taps / taps.sum(-1, keepdim=True)


def gaussian_logits(count: int, size: int) -> torch.Tensor:
    """``[count, size²]`` raw values whose :func:`normalized_kernels` are Gaussians of σ from 0.7 px to size/5."""
    centre = size // 2
    ys, xs = torch.meshgrid(torch.arange(size) - centre, torch.arange(size) - centre, indexing="ij")
    radius2 = (ys ** 2 + xs ** 2).float().flatten()
    sigmas = torch.linspace(0.7, max(size / 5, 0.8), count)
    peaks = torch.exp(-radius2[None] / (2 * sigmas[:, None] ** 2)) * 4  # peak 4, tails ~0
    return torch.where(peaks > 20, peaks, torch.log(torch.expm1(peaks.clamp_min(1e-4))))


@dataclass
class KernelEstimate:
    """M's output: ``basis [B, R, m, m]`` (each sums to one) and ``weights [B, R, H, W]`` (softmax over R)."""
    basis: torch.Tensor
    weights: torch.Tensor

    @property
    def kernel_size(self) -> int:
        return self.basis.shape[-1]

    def kernel_map(self, size: tuple[int, int]) -> torch.Tensor:
        """Per-pixel kernels average-pooled to ``size = (h, w)``: ``[B, m², h, w]`` (each still sums to
        one). This is the Kernel ControlNet's ``k_in`` at latent resolution."""
        pooled = F.adaptive_avg_pool2d(self.weights, size)
        return torch.einsum("brk,brhw->bkhw", self.basis.flatten(2), pooled)

    def per_pixel(self) -> torch.Tensor:
        """The full ``[B, m², H, W]`` map (m² floats per pixel: small images only)."""
        return self.kernel_map(tuple(self.weights.shape[-2:]))

    def reblur(self, sharp: torch.Tensor, border: str = "reflect") -> torch.Tensor:
        """The sharp ``[B, C, H, W]`` filtered by the per-pixel kernels (convolution orientation).

        ``sharp`` may be larger than the estimate by ``m − 1`` (a margin of ``m // 2`` on each side):
        then the margin supplies the borders and the output has the estimate's size (training)."""
        h, w = self.weights.shape[-2:]
        c = self.kernel_size // 2
        if sharp.shape[-2:] == (h, w):
            return blend_convolutions(sharp, self.basis, self.weights, border)
        if sharp.shape[-2:] != (h + 2 * c, w + 2 * c):
            raise ValueError(f"sharp image {tuple(sharp.shape[-2:])} must be {(h, w)} or that plus a {c}-pixel margin")
        weights = pad(self.weights, c, "replicate")
        return blend_convolutions(sharp, self.basis, weights, border)[..., c:c + h, c:c + w]

    def detach(self) -> "KernelEstimate":
        return KernelEstimate(self.basis.detach(), self.weights.detach())


class KernelEstimator(nn.Module):
    """M: a small UNet on the blurry image; the bottleneck, pooled over the image, gives the basis
    kernels, the decoder the per-pixel mixing weights. Any image size (padded to the UNet's multiple)."""

    def __init__(self, config: EstimatorConfig | None = None):
        super().__init__()
        self.config = c = config or EstimatorConfig()
        if c.kernel_size < 1 or c.kernel_size % 2 == 0:
            raise ValueError(f"kernel size must be odd, got {c.kernel_size}")
        w = c.widths
        self.stem = nn.Conv2d(3, w[0], 3, padding=1)
        self.encoders = nn.ModuleList([_stage(w[0], c.blocks)])
        self.downs = nn.ModuleList()
        for a, b in zip(w[:-1], w[1:]):
            self.downs.append(nn.Conv2d(a, b, 3, stride=2, padding=1))
            self.encoders.append(_stage(b, c.blocks))
        self.ups = nn.ModuleList([nn.Conv2d(b, a * 4, 1) for a, b in zip(w[:-1], w[1:])])  # pixel shuffle ×2
        self.decoders = nn.ModuleList([_stage(a, c.blocks) for a in w[:-1]])
        self.mix_head = nn.Conv2d(w[0], c.basis, 3, padding=1)
        self.basis_head = nn.Sequential(nn.Linear(2 * w[-1], 2 * w[-1]), nn.SiLU(),
                                        nn.Linear(2 * w[-1], c.basis * c.kernel_size ** 2))
        with torch.no_grad():  # start from Gaussians of growing width, not from noise
            self.basis_head[2].weight.mul_(0.1)
            self.basis_head[2].bias.copy_(gaussian_logits(c.basis, c.kernel_size).flatten())

    def forward(self, blurry: torch.Tensor) -> KernelEstimate:
        c = self.config
        h, w = blurry.shape[-2:]
        mult = c.multiple
        ph, pw = (-h) % mult, (-w) % mult
        x = blurry * 2 - 1
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        x = self.encoders[0](self.stem(x))
        skips = []
        for down, encoder in zip(self.downs, self.encoders[1:]):
            skips.append(x)
            x = encoder(down(x))
        pooled = torch.cat([x.mean((-2, -1)), x.amax((-2, -1))], 1)
        basis = normalized_kernels(self.basis_head(pooled).view(-1, c.basis, c.kernel_size ** 2).float())
        basis = basis.view(-1, c.basis, c.kernel_size, c.kernel_size)
        for index in reversed(range(len(skips))):
            x = F.pixel_shuffle(self.ups[index](x), 2) + skips[index]
            x = self.decoders[index](x)
        logits = self.mix_head(F.silu(x))[..., :h, :w].float()
        weights = (LOGIT_BOUND * torch.tanh(logits / LOGIT_BOUND)).softmax(1)  # bounded: never saturates
        return KernelEstimate(basis, weights)


class BlurLevelRegressor(nn.Module):
    """T: kernel grid ``[B, m², h, w]`` → blur level per cell ``[B, 1, h, w]`` in ``[0, LEVEL_MAX]``."""

    def __init__(self, config: RegressorConfig | None = None):
        super().__init__()
        self.config = c = config or RegressorConfig()
        self.inp = nn.Conv2d(c.kernel_size ** 2, c.width, 1)
        self.convs = nn.ModuleList([nn.Conv2d(c.width, c.width, 3, padding=1) for _ in range(c.layers)])
        self.head = nn.Conv2d(c.width, 1, 1)

    def forward(self, kernel_map: torch.Tensor) -> torch.Tensor:
        x = self.inp(kernel_map * kernel_map.shape[1])  # a uniform kernel → ones
        for conv in self.convs:
            x = x + conv(F.silu(x))
        return torch.sigmoid(self.head(F.silu(x)).float()) * LEVEL_MAX

    def level(self, kernel_map: torch.Tensor) -> torch.Tensor:
        """One blur level per image ``[B]``: the mean over its cells."""
        return self(kernel_map).mean((1, 2, 3))


def level_grid(height: int, width: int) -> tuple[int, int]:
    """Size of the stride-``LEVEL_STRIDE`` grid T reads for an image (at least one cell)."""
    return max(1, round(height / LEVEL_STRIDE)), max(1, round(width / LEVEL_STRIDE))


def config_dict(config) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}
