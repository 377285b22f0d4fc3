"""Readable pictures of BLUR_KERNELs: each kernel scaled to its peak, enlarged with sharp pixel
edges (nearest neighbour), in heat colours; a spatially varying grid is drawn as a grid of kernels.

A per-pixel map (Blur Kernel Estimate's kernel per 8x8 pixels, LKPN's per latent pixel) would make
one picture per cell, gigabytes for an ordinary photo, so both the picture and the drawing on the
node (``nodes/kernel_ui.py``) show an evenly spaced sub-grid (:func:`shown_cells`,
:func:`cell_indices`), and the picture's side is capped (:data:`MAX_SIDE`, :data:`MAX_PIXELS`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..common.visual import colormap, label


MAX_CELLS = 12  # kernels shown along a side of a grid
MAX_VALUES = 1 << 16  # kernel values shown per image (a budget on cells x k²)
MAX_SIDE = 4096  # pixels along a side of one preview picture
MAX_PIXELS = 1 << 25  # pixels of the whole preview batch (32 MP, 384 MB as float32 RGB)


def shown_cells(grid: int, kernel_size: int, other_side: int) -> int:
    """How many kernels to show along a side of ``grid`` cells (the same budget on both sides)."""
    budget = max(1, int(math.sqrt(MAX_VALUES / (kernel_size * kernel_size))))
    return max(1, min(grid, MAX_CELLS, budget))


def cell_indices(grid: int, shown: int) -> torch.Tensor:
    """Grid cells at the centres of ``shown`` equal parts of ``grid`` (all of them when equal)."""
    return ((torch.arange(shown, dtype=torch.float64) + 0.5) * grid / shown).floor().long().clamp_(max=grid - 1)


def thinned(kernels: torch.Tensor) -> torch.Tensor:
    """``[B, gh, gw, k, k]`` → the evenly spaced sub-grid that is shown, ``[B, sh, sw, k, k]``."""
    gh, gw, k = kernels.shape[1], kernels.shape[2], kernels.shape[-1]
    sh, sw = shown_cells(gh, k, gw), shown_cells(gw, k, gh)
    return kernels[:, cell_indices(gh, sh)][:, :, cell_indices(gw, sw)]


def cell_size(size: int, batch: int, rows: int, columns: int) -> int:
    """The side of one kernel's picture: ``size``, less where the preview would pass its caps."""
    side = min(MAX_SIDE, math.isqrt(MAX_PIXELS // max(1, batch)))
    return max(1, min(size, side // max(rows, columns)))


def kernel_image(kernel: torch.Tensor, size: int, gamma: float = 0.5) -> torch.Tensor:
    """``[k, k]`` → ``[3, size, size]``; ``gamma`` < 1 lifts the faint tail of long trajectories."""
    k = kernel.float()
    peak = k.max()
    k = (k / peak) ** gamma if peak > 0 else k
    cell = max(1, size // k.shape[-1])
    # coloured before it is enlarged (the same picture, cell² times less work)
    big = colormap(k).repeat_interleave(cell, -2).repeat_interleave(cell, -1)
    pad_total = size - big.shape[-1]
    if pad_total <= 0:
        return F.pad(big, (pad_total // 2, pad_total - pad_total // 2) * 2)
    out = colormap(torch.zeros(1, 1)).expand(3, size, size).clone()
    start = pad_total // 2
    out[:, start:start + big.shape[-2], start:start + big.shape[-1]] = big
    return out


def preview(blur_kernel: dict, size: int = 256, captions: bool = True) -> torch.Tensor:
    """``[B, 3, s·sh, s·sw]`` with a one-pixel grid between cells: sh × sw the shown sub-grid
    (:func:`thinned`), s = ``size`` unless that would pass :data:`MAX_SIDE` or :data:`MAX_PIXELS`."""
    kernels = thinned(blur_kernel["kernels"])
    b, gh, gw = kernels.shape[:3]
    size = cell_size(size, b, gh, gw)
    out = torch.empty(b, 3, gh * size, gw * size)  # drawn in place: the picture is the only large tensor
    for i in range(b):
        for r in range(gh):
            for c in range(gw):
                out[i, :, r * size:(r + 1) * size, c * size:(c + 1) * size] = kernel_image(kernels[i, r, c], size)
        for c in range(1, gw):
            out[i, :, :, c * size - 1] = 0.35
        for r in range(1, gh):
            out[i, :, r * size - 1, :] = 0.35
        if captions:
            label(out[i], caption(blur_kernel, i), "bottom-left", in_place=True)
    return out


def caption(blur_kernel: dict, index: int) -> str:
    k = blur_kernel["kernels"].shape[-1]
    info = (blur_kernel.get("info") or [{}] * (index + 1))[index] or {}
    parts = [info.get("kind", "kernel").replace("_", " "), f"{k}x{k}"]
    if "length_px" in info:
        parts.append(f"path {info['length_px']:.0f} px")
    level = (blur_kernel.get("level") or [None] * (index + 1))[index]
    if level is not None:
        parts.append(f"t={level:g}")
    grid = info.get("grid")
    if grid and grid != [1, 1]:
        parts.append(f"grid {grid[0]}x{grid[1]}")
    shape = blur_kernel["kernels"].shape
    shown = [shown_cells(shape[1], k, shape[2]), shown_cells(shape[2], k, shape[1])]
    if shown != list(shape[1:3]):
        parts.append(f"{shown[0]}x{shown[1]} of {shape[1]}x{shape[2]} shown")
    return " · ".join(parts)
