"""Full-reference image quality: PSNR and SSIM, per image of a batch.

SSIM follows Wang et al. (2004) as the deblurring literature reports it (and as BasicSR, which the
HI-Diff code uses, computes it): an 11×11 Gaussian window of σ = 1.5, K1 = 0.01, K2 = 0.03, population
statistics, the mean over the "valid" region (no padding) and over the colour channels.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _check(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"images to compare must be two [B, C, H, W] tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    return a.double(), b.double()


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """``[B]`` PSNR in dB (``inf`` for identical images)."""
    a, b = _check(a, b)
    mse = (a - b).pow(2).flatten(1).mean(1)
    return (10 * torch.log10(data_range ** 2 / mse)).float()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """``[B]`` mean SSIM over the valid region and the channels."""
    a, b = _check(a, b)
    if min(a.shape[-2:]) < window:
        raise ValueError(f"SSIM needs images of at least {window}x{window} pixels, got {tuple(a.shape[-2:])}")
    channels = a.shape[1]
    kernel = gaussian_window(window, sigma).to(a.device).expand(channels, 1, window, window)
    filt = lambda x: F.conv2d(x, kernel, groups=channels)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    var_a = filt(a * a) - mu_a ** 2
    var_b = filt(b * b) - mu_b ** 2
    cov = filt(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(1).float()


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round to the 256 levels a saved PNG holds, as papers do before measuring."""
    return (x.clamp(0, 1) * 255).round() / 255


def mean_finite(values) -> float:
    """Mean that skips NaN (a metric that could not be computed); identical images (inf dB) stay inf."""
    values = [float(v) for v in values if not math.isnan(float(v))]
    return sum(values) / len(values) if values else float("nan")
