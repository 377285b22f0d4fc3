"""Deconvolution by a ``BLUR_KERNEL`` (``models/blur/blur_kernel.py``): every producer's layout, uniform or
spatially varying, tiled, in linear light or in stored values.

Spatially varying kernels: the image is cut into overlapping regions, each deconvolved with its *local*
kernel (the mean of the kernels over the region) and the results blended with linear ramps. That is the
inverse of the efficient-filter-flow model of spatially varying blur (Hirsch et al., CVPR 2010: the blur
taken as uniform within each overlapping patch), which needs one FFT solve per region instead of a
per-pixel operator (``k²`` multiply-adds per pixel and iteration, and a ``k²``-channel map in memory).
Regions of ``REGION`` px with half of it overlapping keep the kernel's changes smooth; a uniform kernel
needs no regions, only tiles for memory.

Every window carries a halo of real image around it (``halo``: 2 kernel widths and 8 px), so a tile's
seams see the same context as the whole image; only the image's own borders are edge-tapered (the taper
in ``deconvolution.py``), where nothing beyond is known. Memory follows the window, not the image (plus
the output).

Grids: a ``gh × gw`` grid is either cells spread over the image (Synthetic Motion Blur's regions, blended
bilinearly at cell centres as ``models/blur/convolve.py`` blurs), or, when its ``info`` names a stride
(``stride_px``: Blur Kernel Estimate's 8 px cells; ``latent_downsampling``: DeblurDiff's latent pixels),
cells of that many pixels from the top-left corner, which may overhang the image by the producer's padding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..blur.blur_kernel import check_blur_kernel
from ..blur.degrade import from_linear, to_linear
from ..common.tiling import blend_ramp, tile_starts
from .deconvolution import sparse_deconvolve, wiener_deconvolve

METHODS = ("wiener", "total_variation")
REGION = 96  # side of the regions a spatially varying kernel is taken as uniform over
MAX_OVERHANG = 64  # a stride grid may pass the image by at most this (DeblurDiff pads to 64)


@dataclass
class DeconvolutionSettings:
    strength: float = 1e-2  # regularisation weight (gradient penalty of the Wiener filter / TV weight)
    gamma: float = 2.2  # deconvolve in linear light with this camera response; 1 = the stored values
    tile: int = 512  # window side for memory; 0 = the whole image when the kernel is uniform
    method: str = "wiener"

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown deconvolution method {self.method!r}; use one of {', '.join(METHODS)}")
        if not (math.isfinite(self.strength) and self.strength > 0):
            raise ValueError(f"regularisation strength must be a positive number, got {self.strength}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ValueError(f"camera gamma must be a positive number, got {self.gamma}")
        if self.tile < 0 or 0 < self.tile < 32:
            raise ValueError(f"tile size must be 0 (whole image) or at least 32 px, got {self.tile}")


def stride_of(info: dict | None) -> int | None:
    """The cell size in pixels a producer declares for its kernel grid, or None (cells over the image)."""
    info = info or {}
    for key in ("stride_px", "latent_downsampling"):
        value = info.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 1:
            return int(value)
    return None


def check_kernel_for(value, batch: int, height: int, width: int, name: str = "kernel") -> dict:
    """A BLUR_KERNEL fit to deconvolve ``batch`` images of ``height × width``, or a ValueError naming what is wrong."""
    if not isinstance(value, dict) or not isinstance(value.get("kernels"), torch.Tensor):
        raise ValueError(f"{name}: expected a BLUR_KERNEL (a dict with a 'kernels' tensor), got {type(value).__name__}")
    kernels = value["kernels"]
    if kernels.ndim != 5 or kernels.shape[-1] != kernels.shape[-2] or kernels.shape[-1] % 2 == 0 or 0 in kernels.shape:
        raise ValueError(f"{name}: wrong shape {tuple(kernels.shape)}; kernels must be [batch, gh, gw, k, k] with odd k")
    if not torch.isfinite(kernels).all():
        raise ValueError(f"{name}: the kernels contain NaN or infinite values")
    sums = kernels.double().sum((-2, -1))
    if (sums < 0).any():
        raise ValueError(f"{name}: a kernel has a negative sum ({float(sums.min()):.4g}); a blur kernel sums to 1")
    if (kernels.abs().sum((-2, -1)) == 0).any():
        raise ValueError(f"{name}: a kernel is all zero; a blur kernel sums to 1")
    check_blur_kernel(value, name)
    if kernels.shape[0] not in (1, batch):
        raise ValueError(f"{name}: kernels for {kernels.shape[0]} images cannot deconvolve a batch of {batch} "
                         "(give one kernel set per image, or one for all)")
    gh, gw = kernels.shape[1:3]
    infos = value.get("info") or [{}] * kernels.shape[0]
    for info in infos:
        stride = stride_of(info)
        if stride is None:
            if gh > height or gw > width:
                raise ValueError(f"{name}: a {gh}x{gw} kernel grid does not match a {height}x{width} image "
                                 "(more cells than pixels: kernels from another image?)")
            continue
        covered = (gh * stride, gw * stride)
        if not (height <= covered[0] < height + MAX_OVERHANG and width <= covered[1] < width + MAX_OVERHANG):
            raise ValueError(f"{name}: the {gh}x{gw} kernel grid of {stride} px cells covers {covered[0]}x{covered[1]} px, "
                             f"which does not match the {height}x{width} image (kernels estimated on another image or size?)")
    return value


def _axis_weights(cells: int, length: int, stride: int | None) -> torch.Tensor:
    """``[cells, length]``: how much each grid cell's kernel counts at each pixel along one axis."""
    if stride is not None:  # cell i holds pixels [i·stride, (i+1)·stride)
        return torch.nn.functional.one_hot((torch.arange(length) // stride).clamp(max=cells - 1), cells).T.double()
    if cells == length:
        return torch.eye(cells, dtype=torch.float64)
    eye = torch.eye(cells, dtype=torch.float64)[:, None]  # [cells, 1, cells]: linear blend between cell centres
    return torch.nn.functional.interpolate(eye, size=length, mode="linear", align_corners=False)[:, 0]


class KernelGrid:
    """One image's kernels ``[gh, gw, k, k]`` placed over ``height × width``; ``local`` averages them over a box."""

    def __init__(self, kernels: torch.Tensor, info: dict | None, height: int, width: int):
        self.kernels = kernels.double()
        gh, gw = kernels.shape[:2]
        stride = stride_of(info)
        self.uniform = gh * gw == 1 or bool((self.kernels == self.kernels[:1, :1]).all())
        self.rows = _axis_weights(gh, height, stride)
        self.cols = _axis_weights(gw, width, stride)

    def local(self, top: int, left: int, height: int, width: int) -> torch.Tensor:
        """The mean kernel over the pixels ``[top, top + height) × [left, left + width)`` (sums to 1)."""
        if self.uniform:
            return self.kernels[0, 0]
        a = self.rows[:, top:top + height].mean(1)
        b = self.cols[:, left:left + width].mean(1)
        kernel = torch.einsum("i,j,ijyx->yx", a, b, self.kernels)
        return kernel / kernel.sum()


def halo(kernel_size: int) -> int:
    """Real image kept around every window, so tiles see the context the whole image would."""
    return 2 * kernel_size + 8


def windows(height: int, width: int, grid: KernelGrid, settings: DeconvolutionSettings) -> tuple[int, int, int, int]:
    """(tile height, tile width, overlap along y, overlap along x) of the windows the image is solved in."""
    side = settings.tile or max(height, width)
    if not grid.uniform:
        side = min(side, REGION)
    th, tw = min(side, height), min(side, width)
    if grid.uniform:
        overlap = min(32, side // 4)
        return th, tw, overlap, overlap
    return th, tw, th // 2, tw // 2


def window_count(height: int, width: int, grid: KernelGrid, settings: DeconvolutionSettings) -> int:
    th, tw, oy, ox = windows(height, width, grid, settings)
    return len(tile_starts(height, th, oy)) * len(tile_starts(width, tw, ox))


def _solve(crop: torch.Tensor, kernel: torch.Tensor, settings: DeconvolutionSettings) -> torch.Tensor:
    linear = to_linear(crop.double(), settings.gamma)
    if settings.method == "wiener":
        out = wiener_deconvolve(linear[None], kernel, settings.strength, exact_borders=False)[0]
    else:
        out = sparse_deconvolve(linear[None], kernel, settings.strength)[0]
    return from_linear(out.clamp(0, 1), settings.gamma)


def deconvolve_image(image: torch.Tensor, grid: KernelGrid, settings: DeconvolutionSettings,
                     on_window: Callable[[], None] | None = None) -> torch.Tensor:
    """One ``[C, H, W]`` image in 0..1 deconvolved window by window (see the module docstring)."""
    ch, h, w = image.shape
    th, tw, oy, ox = windows(h, w, grid, settings)
    rows, cols = tile_starts(h, th, oy), tile_starts(w, tw, ox)
    margin = halo(grid.kernels.shape[-1])
    out = torch.zeros(ch, h, w, dtype=torch.float32)
    total = torch.zeros(1, h, w, dtype=torch.float32)
    for i, top in enumerate(rows):
        wy = blend_ramp(th, rows[i - 1] + th - top if i else 0, top + th - rows[i + 1] if i + 1 < len(rows) else 0)
        for j, left in enumerate(cols):
            wx = blend_ramp(tw, cols[j - 1] + tw - left if j else 0, left + tw - cols[j + 1] if j + 1 < len(cols) else 0)
            y0, x0 = max(top - margin, 0), max(left - margin, 0)
            y1, x1 = min(top + th + margin, h), min(left + tw + margin, w)
            kernel = grid.local(top, left, th, tw)
            solved = _solve(image[:, y0:y1, x0:x1], kernel, settings)
            mask = (wy[:, None] * wx[None, :]).float()
            out[:, top:top + th, left:left + tw] += solved[:, top - y0:top - y0 + th, left - x0:left - x0 + tw].float() * mask
            total[:, top:top + th, left:left + tw] += mask
            if on_window:
                on_window()
    return out / total


def grids_for(value: dict, batch: int, height: int, width: int) -> list[KernelGrid]:
    kernels = value["kernels"]
    infos = value.get("info") or [{}] * kernels.shape[0]
    grids = [KernelGrid(kernels[i], infos[i], height, width) for i in range(kernels.shape[0])]
    return grids * batch if len(grids) == 1 else grids


def total_windows(value: dict, batch: int, height: int, width: int, settings: DeconvolutionSettings) -> int:
    """How many windows :func:`deconvolve` solves for a batch (the progress total)."""
    return sum(window_count(height, width, grid, settings) for grid in grids_for(check_kernel_for(value, batch, height, width), batch, height, width))


def deconvolve(images: torch.Tensor, value: dict, settings: DeconvolutionSettings | None = None,
               on_window: Callable[[], None] | None = None) -> torch.Tensor:
    """``[B, C, H, W]`` in 0..1 deconvolved by a BLUR_KERNEL (one kernel set per image, or one for all)."""
    settings = settings or DeconvolutionSettings()
    b, _, h, w = images.shape
    value = check_kernel_for(value, b, h, w)
    grids = grids_for(value, b, h, w)
    return torch.stack([deconvolve_image(images[i].cpu(), grids[i], settings, on_window) for i in range(b)]).to(images)
