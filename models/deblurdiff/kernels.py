"""LKPN kernels for people: as ``BLUR_KERNEL`` maps and as a picture.

The LKPN predicts, per latent pixel and latent channel, a signed 5×5 *correlation* kernel that EAC
applies before adding the pixel back (a residual). The effective filter is therefore ``W + δ``
(``δ`` = 1 at the centre). ``BLUR_KERNEL`` (documented in ``models/blur/blur_kernel.py``) holds
non-negative, unit-sum kernels in *convolution* orientation on a grid; a per-pixel map is the grid
``(h, w)`` of the latent. The conversion keeps what can be shown in that form: the magnitude of the
effective filter, averaged over the latent channels, flipped into convolution orientation and
normalised to sum 1 — where each latent pixel gathers its value from. The raw signed kernels travel
along under ``"lkpn"`` for anyone who needs the numbers.
"""
from __future__ import annotations

import torch

from .lkpn import KERNEL_SIZE

NEUTRAL = 0.5  # grey for zero in the signed picture


def effective_kernels(kernels: torch.Tensor, size: int = KERNEL_SIZE) -> torch.Tensor:
    """``[B, G·k·k, h, w]`` EAC weights → ``[B, G, h, w, k, k]`` effective filters (residual added),
    correlation orientation (tap ``[i, j]`` reads the pixel ``i - k//2`` rows below)."""
    b, channels, h, w = kernels.shape
    groups = channels // (size * size)
    out = kernels.float().view(b, groups, size, size, h, w).permute(0, 1, 4, 5, 2, 3).clone()
    out[..., size // 2, size // 2] += 1.0
    return out


def blur_kernel_maps(kernels: torch.Tensor, timestep: int | None = None, size: int = KERNEL_SIZE) -> dict:
    """A ``BLUR_KERNEL`` value for LKPN kernels ``[B, G·k·k, h, w]`` (see the module docstring)."""
    effective = effective_kernels(kernels, size)
    magnitude = effective.abs().mean(1).flip(-1, -2)  # [B, h, w, k, k], convolution orientation
    total = magnitude.sum((-2, -1), keepdim=True)
    uniform = torch.full_like(magnitude, 1.0 / (size * size))
    maps = torch.where(total > 0, magnitude / total.clamp_min(1e-12), uniform)
    b, h, w = maps.shape[:3]
    info = {"kind": "lkpn", "size": size, "grid": [h, w], "latent_downsampling": 8,
            "meaning": "|EAC filter + identity|, mean over latent channels, normalised"}
    if timestep is not None:
        info["timestep"] = int(timestep)
    return {"kernels": maps.cpu().contiguous(), "level": None, "info": [dict(info) for _ in range(b)],
            "lkpn": {"weights": kernels.detach().float().cpu(), "orientation": "correlation", "residual": True}}


def preview(kernels: torch.Tensor, height: int, width: int, cell_px: int = 48, max_cells: int = 16,
            size: int = KERNEL_SIZE) -> torch.Tensor:
    """``[B, 3, height, width]`` picture aligned with the image: the image is cut into cells of about
    ``cell_px`` pixels (at most ``max_cells`` a side) and each cell shows the effective filter (mean
    over latent channels) of the latent pixel at its centre — red positive, blue negative, scaled to
    its own largest magnitude, on a dark frame."""
    effective = effective_kernels(kernels, size).mean(1)  # [B, h, w, k, k]
    b, h, w = effective.shape[:3]
    rows = max(1, min(max_cells, height // cell_px))
    cols = max(1, min(max_cells, width // cell_px))
    centre_y = ((torch.arange(rows) + 0.5) * height / rows / 8).long().clamp(max=h - 1)
    centre_x = ((torch.arange(cols) + 0.5) * width / cols / 8).long().clamp(max=w - 1)
    chosen = effective[:, centre_y][:, :, centre_x]  # [B, rows, cols, k, k]
    signed = chosen / chosen.abs().amax((-2, -1), keepdim=True).clamp_min(1e-12)
    positive, negative = signed.clamp(min=0), (-signed).clamp(min=0)
    rgb = torch.stack([NEUTRAL + NEUTRAL * positive - 0.3 * negative,
                       NEUTRAL - 0.3 * signed.abs(),
                       NEUTRAL + NEUTRAL * negative - 0.3 * positive], 1)  # [B, 3, rows, cols, k, k]
    rgb = torch.nn.functional.pad(rgb, (1, 1, 1, 1), value=0.15)  # a frame around each kernel
    mosaic = rgb.permute(0, 1, 2, 4, 3, 5).reshape(b, 3, rows * (size + 2), cols * (size + 2))
    return torch.nn.functional.interpolate(mosaic, size=(height, width), mode="nearest").clamp(0, 1)
