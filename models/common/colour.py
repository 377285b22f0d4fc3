"""Colour anchoring: a restored image keeps the input's low frequencies.

Motion blur moves light by at most the kernel's extent, so averaged over a much larger area the
blurry photo already has the right colours and brightness; only the detail is wrong. A small
restoration network drifts there (a tint, a darker channel), which users see at once. Replacing the
output's low frequencies (a Gaussian of ``sigma`` px) by the input's removes that drift and leaves
the detail the network restored: the colour fix diffusion restorers such as StableSR apply.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_SIGMA = 256.0


def gaussian_lowpass(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``[B, C, H, W]`` with reflected borders (radius 3σ, clipped to the image)."""
    h, w = x.shape[-2:]
    radius = max(1, min(int(math.ceil(3 * sigma)), h - 1, w - 1)) if min(h, w) > 1 else 0
    if radius == 0:
        return x.mean(dim=(-2, -1), keepdim=True).expand_as(x)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(x.dtype)
    c = x.shape[1]
    y = F.pad(x, (radius, radius, 0, 0), mode="reflect")
    y = F.conv2d(y, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.pad(y, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(y, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def anchor_colours(output: torch.Tensor, reference: torch.Tensor, sigma: float) -> torch.Tensor:
    """``output`` with its low frequencies (scale ``sigma`` px) taken from ``reference``."""
    if sigma <= 0:
        return output
    return output + gaussian_lowpass(reference.to(output.dtype) - output, sigma)
