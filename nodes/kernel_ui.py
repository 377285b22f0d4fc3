"""A ``BLUR_KERNEL`` as a small JSON payload that the frontend draws on the node (js/deblur/kernels.js).

A node returns ``{"ui": kernel_ui(value), "result": (...)}``. Per image (at most ``MAX_IMAGES``): the
kernel size, the full grid size, and the kernels of an evenly spaced sub-grid (per-pixel maps such as
LKPN's are thinned to at most ``MAX_CELLS`` a side and ``MAX_VALUES`` numbers), each kernel quantised
to bytes relative to its own peak so faint trails stay visible next to sharp ones; the peaks travel
along so the frontend can also show them on one common scale.
"""
from __future__ import annotations

import base64

import torch

# The rule that picks the shown kernels is the preview picture's (Blur Kernel Preview draws the same cells).
from ..models.blur.preview import MAX_CELLS, MAX_VALUES, cell_indices, shown_cells  # noqa: F401

UI_KEY = "deblur_kernels"
MAX_IMAGES = 4


def kernel_ui(value: dict) -> dict:
    kernels = value["kernels"].detach().float().cpu()  # [B, gh, gw, k, k]
    levels = value.get("level") or [None] * kernels.shape[0]
    infos = value.get("info") or [{}] * kernels.shape[0]
    entries = []
    for index in range(min(kernels.shape[0], MAX_IMAGES)):
        grid = kernels[index]
        gh, gw, k = grid.shape[0], grid.shape[1], grid.shape[-1]
        sh, sw = shown_cells(gh, k, gw), shown_cells(gw, k, gh)
        cells = grid[cell_indices(gh, sh)][:, cell_indices(gw, sw)]  # [sh, sw, k, k]
        peaks = cells.amax(dim=(-2, -1)).clamp_min(1e-12)
        quantised = (cells / peaks[..., None, None] * 255).round().to(torch.uint8)
        entries.append({
            "size": k,
            "grid": [gh, gw],
            "shown": [sh, sw],
            "peaks": [float(f"{p:.6g}") for p in peaks.flatten().tolist()],
            "data": base64.b64encode(quantised.numpy().tobytes()).decode("ascii"),
            "level": levels[index],
            "info": infos[index],
        })
    return {UI_KEY: entries, "deblur_kernels_batch": [kernels.shape[0]]}
