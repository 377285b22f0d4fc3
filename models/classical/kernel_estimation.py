"""Blind blur-kernel estimation from the blurry image alone, after Cho & Lee (2009, "Fast motion
deblurring"): coarse to fine, alternate (1) predicting sharp edges, by deconvolving with the current
kernel, then sharpening with a shock filter and keeping only the strongest gradients, and (2) solving
for the kernel in the gradient domain, in closed form with the FFT. The kernel is then cleaned
(negative and faint entries removed) and centred on its centroid (blur is assumed not to move the
image, as for the pack's synthetic kernels); no ground truth is used anywhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..blur.degrade import from_linear, to_linear
from .deconvolution import wiener_deconvolve

KEEP = 0.1  # strongest gradients kept per orientation: KEEP·√(pixels·kernel pixels) (Cho & Lee use 2; fewer is more robust here)


@dataclass
class EstimationSettings:
    iterations: int = 7  # per scale
    latent_weight: float = 4e-3  # gradient penalty of the latent deconvolution (halved per scale)
    kernel_weight: float = 0.05  # Tikhonov weight of the kernel solve, relative to the gradient energy
    shock_steps: int = 3
    shock_dt: float = 0.5
    smooth: float = 1.0  # Gaussian sigma before the shock filter
    faint: float = 0.1  # kernel entries below this fraction of the peak are dropped
    final_weight: float = 1e-2  # gradient penalty of the final deconvolution
    region: int = 384  # the kernel (global) is estimated on the central region at most this wide


def _grey(image: torch.Tensor) -> torch.Tensor:
    return (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]) if image.shape[0] == 3 else image[0]


def _gradients(x: torch.Tensor, margin: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences; the ``margin`` outermost pixels (where the convolution model meets the
    border and the FFT wraps around) are set to zero."""
    gx = torch.roll(x, -1, -1) - x
    gy = torch.roll(x, -1, -2) - x
    m = max(margin, 1)
    for g in (gx, gy):
        g[:m], g[-m:], g[:, :m], g[:, -m:] = 0, 0, 0, 0
    return gx, gy


def _smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing that removes deconvolution ringing and noise before the shock filter."""
    if sigma <= 0:
        return x
    radius = max(1, int(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    g = torch.exp(-t ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    y = F.pad(x[None, None], (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, g.view(1, 1, 1, -1))
    return F.conv2d(y, g.view(1, 1, -1, 1))[0, 0]


def _shock(x: torch.Tensor, steps: int, dt: float) -> torch.Tensor:
    """Osher–Rudin shock filter: pushes values away from the zero crossings of the Laplacian, which
    turns blurred ramps into steps."""
    for _ in range(steps):
        p = F.pad(x[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
        gx = (p[1:-1, 2:] - p[1:-1, :-2]) / 2
        gy = (p[2:, 1:-1] - p[:-2, 1:-1]) / 2
        lap = p[1:-1, 2:] + p[1:-1, :-2] + p[2:, 1:-1] + p[:-2, 1:-1] - 4 * x
        x = x - dt * torch.sign(lap) * torch.sqrt(gx ** 2 + gy ** 2)
    return x


def _strong_gradients(gx: torch.Tensor, gy: torch.Tensor, kernel_size: int, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep, in each of four orientation bins, the ``KEEP·√(pixels · kernel pixels)·scale`` largest gradients."""
    magnitude = torch.sqrt(gx ** 2 + gy ** 2)
    angle = torch.remainder(torch.atan2(gy, gx), math.pi)
    bins = torch.clamp((angle / (math.pi / 4) + 0.5).floor().long() % 4, 0, 3)
    if KEEP is None:
        return gx, gy
    keep = torch.zeros_like(magnitude, dtype=torch.bool)
    count = int(KEEP * math.sqrt(magnitude.numel() * kernel_size ** 2) * scale)
    for b in range(4):
        values = magnitude[bins == b]
        if values.numel() == 0:
            continue
        n = min(count, values.numel())
        threshold = torch.topk(values, n).values[-1]
        keep |= (bins == b) & (magnitude >= threshold)
    return gx * keep, gy * keep


def _solve_kernel(px, py, bx, by, size: int, weight: float) -> torch.Tensor:
    """``argmin_k Σ ||k * ∂P − ∂B||² + β||k||²`` in closed form, cropped to ``size × size``."""
    Fpx, Fpy = torch.fft.fft2(px), torch.fft.fft2(py)
    numerator = torch.conj(Fpx) * torch.fft.fft2(bx) + torch.conj(Fpy) * torch.fft.fft2(by)
    energy = Fpx.abs() ** 2 + Fpy.abs() ** 2
    beta = weight * energy.mean()
    k = torch.fft.ifft2(numerator / (energy + beta)).real
    c = size // 2
    k = torch.roll(k, (c, c), (0, 1))[:size, :size]  # the origin (zero shift) at the centre pixel
    return k


def _connected_to_peak(mask: torch.Tensor, peak: tuple[int, int]) -> torch.Tensor:
    """The 8-connected component of ``mask`` that contains ``peak`` (flood fill by dilation)."""
    region = torch.zeros_like(mask)
    region[peak] = True
    while True:
        grown = F.max_pool2d(region[None, None].float(), 3, 1, 1)[0, 0].bool() & mask
        if torch.equal(grown, region):
            return region
        region = grown


def _clean(k: torch.Tensor, faint: float) -> torch.Tensor:
    """Non-negative, faint entries and islands not connected to the peak removed, sum one: a camera
    path is one connected trail."""
    k = k.clamp(min=0)
    if k.max() <= 0:
        out = torch.zeros_like(k)
        out[k.shape[0] // 2, k.shape[1] // 2] = 1
        return out
    if faint > 0:
        mask = k >= faint * k.max()
        peak = divmod(int(k.argmax()), k.shape[1])
        k = torch.where(_connected_to_peak(mask, peak), k, torch.zeros_like(k))
    return k / k.sum()


def _centre(k: torch.Tensor) -> torch.Tensor:
    """Shift by whole pixels so the centroid lies within half a pixel of the centre."""
    size = k.shape[0]
    ys = torch.arange(size, dtype=k.dtype)
    cy = int(round(float((k.sum(1) * ys).sum()))) - size // 2
    cx = int(round(float((k.sum(0) * ys).sum()))) - size // 2
    if cy == 0 and cx == 0:
        return k
    padded = F.pad(k[None, None], (size, size, size, size))[0, 0]
    return padded[size + cy:2 * size + cy, size + cx:2 * size + cx] / padded.sum().clamp(min=1e-12) * padded.sum()


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x[None, None], size=size, mode="bilinear", align_corners=False, antialias=True)[0, 0]


def estimate_kernel(blurry: torch.Tensor, size: int, settings: EstimationSettings | None = None) -> torch.Tensor:
    """``[3, H, W]`` (or ``[1, H, W]``) blurry image → estimated ``[size, size]`` kernel (odd size)."""
    s = settings or EstimationSettings()
    grey = _grey(blurry.double())
    scales = max(1, int(math.floor(math.log2(max(size, 5) / 5))) + 1)  # coarsest kernel about 5 px
    kernel = None
    for level in reversed(range(scales)):
        factor = 2 ** level
        k_size = max(3, int(size / factor) | 1)
        image = grey if factor == 1 else _resize(grey, (max(8, grey.shape[0] // factor), max(8, grey.shape[1] // factor)))
        if kernel is None:
            kernel = torch.zeros(k_size, k_size, dtype=torch.float64)
            kernel[k_size // 2, k_size // 2] = 1
        else:
            kernel = _clean(_resize(kernel, (k_size, k_size)), 0.0)
        bx, by = _gradients(image, k_size)
        weight = s.latent_weight * (2 ** level)
        for it in range(s.iterations):
            latent = wiener_deconvolve(image[None, None], kernel, weight, exact_borders=False)[0, 0]
            latent = _shock(_smooth(latent, s.smooth), s.shock_steps, s.shock_dt)
            px, py = _strong_gradients(*_gradients(latent, k_size), k_size, 1.0 / (1.1 ** it))
            kernel = _centre(_clean(_solve_kernel(px, py, bx, by, k_size, s.kernel_weight), s.faint))
    return kernel.float()


def blind_deblur(blurry: torch.Tensor, kernel_size: int, settings: EstimationSettings | None = None,
                 gamma: float = 2.2) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, 3, H, W]`` → (deblurred ``[B, 3, H, W]`` clamped to 0..1, estimated kernels ``[B, k, k]``).

    Works in linear light (``gamma``: the assumed camera response, 2.2 ≈ sRGB; 1 = as stored), where
    blur is a convolution."""
    s = settings or EstimationSettings()
    outputs, kernels = [], []
    for image in blurry:
        linear = to_linear(image.double(), gamma)
        h, w = linear.shape[-2:]
        top, left = max((h - s.region) // 2, 0), max((w - s.region) // 2, 0)
        kernel = estimate_kernel(linear[:, top:top + s.region, left:left + s.region], kernel_size, s)
        restored = wiener_deconvolve(linear[None], kernel, s.final_weight)[0]
        outputs.append(from_linear(restored.clamp(0, 1), gamma).float())
        kernels.append(kernel)
    return torch.stack(outputs), torch.stack(kernels)
