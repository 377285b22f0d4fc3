"""DiffBIR's tiling, for memory bounded by the tile instead of the image: sliding windows (positions
from :func:`..common.tiling.tile_starts`) blended with DiffBIR's Gaussian weights."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..common.tiling import tile_starts

Box = tuple[int, int, int, int]  # top, bottom, left, right


def gaussian_weights(width: int, height: int) -> torch.Tensor:
    """DiffBIR's tile blending weights ``[height, width]`` (float32), kept as they are: the vertical
    profile is centred on ``height / 2``, the horizontal one on ``(width - 1) / 2``."""
    var = 0.01
    x = np.arange(width, dtype=np.float64)
    y = np.arange(height, dtype=np.float64)
    mx, my = (width - 1) / 2, height / 2
    px = np.exp(-(x - mx) * (x - mx) / (width * width) / (2 * var)) / np.sqrt(2 * np.pi * var)
    py = np.exp(-(y - my) * (y - my) / (height * height) / (2 * var)) / np.sqrt(2 * np.pi * var)
    return torch.tensor(np.outer(py, px), dtype=torch.float32)


def needs_tiles(height: int, width: int, tile: int) -> bool:
    """Tile only when the area exceeds one tile's: attention and activations grow with the area, and
    overlapping tiles on a map barely larger than one tile would redo most of the work."""
    return bool(tile) and height * width > tile * tile


def sliding_tiles(height: int, width: int, tile: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(top, bottom, left, right)`` of DiffBIR's sliding windows, row by row; a side shorter than the
    tile gets one tile of its own length."""
    th, tw = min(tile, height), min(tile, width)
    rows = tile_starts(height, th, th - min(stride, th))
    cols = tile_starts(width, tw, tw - min(stride, tw))
    return [(r, r + th, c, c + tw) for r in rows for c in cols]


def tiled_prediction(predict: Callable[[Box], torch.Tensor], like: torch.Tensor, tile: int, stride: int,
                     on_tile: Callable[[], None] | None = None, scale: int = 1, channels: int | None = None) -> torch.Tensor:
    """DiffBIR's tiled noise prediction (and decoding): ``predict(box)`` for each latent tile, blended with
    Gaussian weights (float32, on ``like``'s device). The output is ``like``'s shape, or ``channels`` at
    ``scale`` times the size when ``predict`` up-samples (an autoencoder's decoder)."""
    b, c, h, w = like.shape
    out = torch.zeros((b, channels or c, h * scale, w * scale), dtype=torch.float32, device=like.device)
    count = torch.zeros_like(out)
    weights = None
    for box in sliding_tiles(h, w, tile, stride):
        top, bottom, left, right = (v * scale for v in box)
        if weights is None:
            weights = gaussian_weights(right - left, bottom - top).to(like.device)
        out[:, :, top:bottom, left:right] += predict(box).float() * weights
        count[:, :, top:bottom, left:right] += weights
        if on_tile:
            on_tile()
    return out.div_(count)
