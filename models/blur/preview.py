"""Readable pictures of BLUR_KERNELs: each kernel scaled to its peak, enlarged with sharp pixel
edges (nearest neighbour), in heat colours; a spatially varying grid is drawn as a grid of kernels."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common.visual import colormap, label


def kernel_image(kernel: torch.Tensor, size: int, gamma: float = 0.5) -> torch.Tensor:
    """``[k, k]`` → ``[3, size, size]``; ``gamma`` < 1 lifts the faint tail of long trajectories."""
    k = kernel.float()
    peak = k.max()
    k = (k / peak) ** gamma if peak > 0 else k
    cell = max(1, size // k.shape[-1])
    big = k.repeat_interleave(cell, 0).repeat_interleave(cell, 1)
    pad_total = size - big.shape[-1]
    big = F.pad(big, (pad_total // 2, pad_total - pad_total // 2) * 2)
    return colormap(big)


def preview(blur_kernel: dict, size: int = 256, captions: bool = True) -> torch.Tensor:
    """``[B, 3, size·gh, size·gw]`` (gh × gw the kernel grid) with a one-pixel grid between cells."""
    kernels = blur_kernel["kernels"]
    b, gh, gw = kernels.shape[:3]
    out = []
    for i in range(b):
        rows = []
        for r in range(gh):
            cells = [kernel_image(kernels[i, r, c], size) for c in range(gw)]
            for c in range(gw - 1):
                cells[c][:, :, -1] = 0.35
            rows.append(torch.cat(cells, -1))
            if r + 1 < gh:
                rows[-1][:, -1, :] = 0.35
        image = torch.cat(rows, -2)
        if captions:
            image = label(image, caption(blur_kernel, i), "bottom-left")
        out.append(image)
    return torch.stack(out)


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
    return " · ".join(parts)
