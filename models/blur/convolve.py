"""Blurring images with kernels: one kernel per image, or kernels blended over the image.

``convolve`` is a true convolution (``out(p) = Σ_u K[c + u] · img(p − u)``, the kernel is not
correlated), so a kernel drawn from a trajectory smears a point along that trajectory. Borders are
extended before blurring (``reflect`` by default: no dark frame, no wrap-around) and the output has
the input's size. Kernels above ``FFT_FROM`` pixels wide go through the FFT, which gives the same
result as the direct sum for a fraction of the time.

Spatially varying blur uses kernels on a coarse ``gh × gw`` grid: the kernel at a pixel is the
bilinear blend of the grid kernels around it (cell centres, ``align_corners=False``). Blending the
kernels and blending the images blurred by each kernel are the same operation; small grids take the
second route (a few convolutions), large grids (per-pixel kernel maps) the first.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

BORDERS = ("reflect", "replicate", "circular", "zeros")
FFT_FROM = 15
BLEND_UP_TO = 16  # grid cells; above this, per-pixel kernels are applied offset by offset


def pad(images: torch.Tensor, amount: int, border: str) -> torch.Tensor:
    if border not in BORDERS:
        raise ValueError(f"unknown border {border!r}; use one of {', '.join(BORDERS)}")
    if amount == 0:
        return images
    h, w = images.shape[-2:]
    if border == "reflect" and (amount >= h or amount >= w):
        border = "replicate"  # reflection needs more pixels than the margin
    mode = "constant" if border == "zeros" else border
    return F.pad(images, (amount,) * 4, mode=mode)


def _as_batch_kernels(kernels: torch.Tensor, batch: int) -> torch.Tensor:
    if kernels.ndim == 2:
        kernels = kernels.expand(batch, *kernels.shape)
    if kernels.ndim != 3 or kernels.shape[0] not in (1, batch) or kernels.shape[1] != kernels.shape[2] or kernels.shape[1] % 2 == 0:
        raise ValueError(f"kernels must be [k, k] or [batch, k, k] with odd k, got {tuple(kernels.shape)} for {batch} images")
    return kernels.expand(batch, -1, -1)


def convolve(images: torch.Tensor, kernels: torch.Tensor, border: str = "reflect") -> torch.Tensor:
    """Blur ``[B, C, H, W]`` with ``[k, k]`` (all images) or ``[B, k, k]`` (one per image)."""
    b, ch, h, w = images.shape
    kernels = _as_batch_kernels(kernels, b).to(images)
    k = kernels.shape[-1]
    c = k // 2
    padded = pad(images, c, border)
    if k < FFT_FROM:
        weight = kernels.flip(-2, -1).repeat_interleave(ch, 0)[:, None]  # correlation with the flipped kernel
        out = F.conv2d(padded.reshape(1, b * ch, *padded.shape[-2:]), weight, groups=b * ch)
        return out.view(b, ch, h, w)
    size = padded.shape[-2:]
    spectrum = torch.fft.rfft2(padded.double()) * torch.fft.rfft2(kernels.double(), s=size)[:, None]
    full = torch.fft.irfft2(spectrum, s=size)  # circular; the valid part has no wrap-around
    return full[..., 2 * c:2 * c + h, 2 * c:2 * c + w].to(images.dtype)


def grid_weights(grid: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """``[gh·gw, H, W]`` bilinear blending weights of grid cells (a partition of unity)."""
    gh, gw = grid
    eye = torch.eye(gh * gw, dtype=torch.float32).view(gh * gw, 1, gh, gw)
    if (gh, gw) == (height, width):
        return eye.view(gh * gw, height, width)
    return F.interpolate(eye, size=(height, width), mode="bilinear", align_corners=False)[:, 0]


def kernel_map(kernels: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Grid kernels ``[B, gh, gw, k, k]`` → per-pixel kernels ``[B, k·k, H, W]`` (bilinear blend)."""
    b, gh, gw, k, _ = kernels.shape
    grid = kernels.permute(0, 3, 4, 1, 2).reshape(b, k * k, gh, gw)
    if (gh, gw) == (height, width):
        return grid
    return F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)


def blur(images: torch.Tensor, kernels: torch.Tensor, border: str = "reflect") -> torch.Tensor:
    """Blur ``[B, C, H, W]`` with grid kernels ``[B, gh, gw, k, k]`` (``gh = gw = 1``: uniform blur)."""
    if kernels.ndim != 5:
        raise ValueError(f"grid kernels must be [batch, gh, gw, k, k], got {tuple(kernels.shape)}")
    b, ch, h, w = images.shape
    kernels = kernels.to(images).expand(b, -1, -1, -1, -1)
    gh, gw, k = kernels.shape[1], kernels.shape[2], kernels.shape[-1]
    if gh * gw == 1:
        return convolve(images, kernels[:, 0, 0], border)
    if gh * gw <= BLEND_UP_TO:
        weights = grid_weights((gh, gw), h, w).to(images)[None]
        return blend_convolutions(images, kernels.reshape(b, gh * gw, k, k), weights, border)
    return per_pixel_filter(images, kernel_map(kernels, h, w), k, border)


def blend_convolutions(images: torch.Tensor, kernels: torch.Tensor, weights: torch.Tensor,
                       border: str = "reflect") -> torch.Tensor:
    """``Σ_r weights[:, r] · convolve(images, kernels[:, r])``: per-pixel kernels that are mixtures of
    ``R`` kernels, ``[B, R, k, k]`` mixed by ``[B or 1, R, H, W]`` (a grid's blending weights, or a
    kernel-basis estimate). Memory: the images and one blurred copy, whatever ``k`` and the image size."""
    b, r = kernels.shape[:2]
    if weights.shape[1] != r or weights.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"{r} kernels need weights [batch, {r}, {images.shape[-2]}, {images.shape[-1]}], got {tuple(weights.shape)}")
    out = None
    for index in range(r):
        term = weights[:, index, None] * convolve(images, kernels[:, index], border)
        out = term if out is None else out + term
    return out


def kernel_groups(images: torch.Tensor, kernels: torch.Tensor, size: int, owner: str = "") -> int:
    """How many kernel groups per-pixel ``kernels [B, G·size², H, W]`` hold for ``images [B, C, H, W]``;
    a ValueError (its text starting with ``owner``) when they do not fit."""
    n, ch, h, w = images.shape
    taps = size * size
    if kernels.ndim != 4 or kernels.shape[0] != n or kernels.shape[2:] != (h, w) or kernels.shape[1] % taps:
        raise ValueError(f"{owner}per-pixel kernels {tuple(kernels.shape)} do not fit images {tuple(images.shape)} "
                         f"with {size}x{size} taps")
    groups = kernels.shape[1] // taps
    if ch % groups:
        raise ValueError(f"{owner}{ch} channels cannot be split into {groups} kernel groups")
    return groups


def per_pixel_filter(images: torch.Tensor, kernels: torch.Tensor, size: int, border: str = "reflect",
                     correlate: bool = False) -> torch.Tensor:
    """A different ``size × size`` kernel at every pixel: ``images [B, C, H, W]``, ``kernels
    [B, G·size², H, W]`` (tap ``i·size + j``; channel ``c`` uses group ``c // (C/G)``).

    Convolution (the blur lab's orientation): ``out(p) = Σ K[c + u] · img(p − u)``; ``correlate=True``:
    ``out(p) = Σ K[c + u] · img(p + u)`` (DeblurDiff's EAC). The taps are accumulated as shifted views of
    the padded input, so memory is the padded input plus the output, never ``size²`` copies.
    """
    n, ch, h, w = images.shape
    taps = size * size
    groups = kernel_groups(images, kernels, size)
    c = size // 2
    padded = pad(images, c, border)
    weights = kernels.view(n, groups, 1, taps, h, w)
    out = torch.zeros_like(images).view(n, groups, ch // groups, h, w)
    for tap in range(taps):
        i, j = divmod(tap, size)
        if not correlate:  # offset u = (i - c, j - c) reads img(p - u): the padded image shifted the other way
            i, j = 2 * c - i, 2 * c - j
        shifted = padded[:, :, i:i + h, j:j + w].reshape(n, groups, ch // groups, h, w)
        out.addcmul_(shifted, weights[:, :, :, tap])
    return out.view(n, ch, h, w)
