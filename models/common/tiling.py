"""Overlapping tiles with seamless blending, so peak memory follows the tile, not the image."""
from __future__ import annotations

from typing import Callable

import torch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, size)`` with tiles of ``tile`` overlapping by at least ``overlap``;
    the last tile is aligned to the end so no tile is smaller than the others."""
    if size <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def blend_ramp(length: int, before: int, after: int) -> torch.Tensor:
    """1-D weights: rising over the overlap with the previous tile, falling over the next one."""
    weight = torch.ones(length, dtype=torch.float64)
    if before:
        weight[:before] = torch.arange(1, before + 1, dtype=torch.float64) / (before + 1)
    if after:
        weight[length - after:] = torch.minimum(
            weight[length - after:], torch.arange(after, 0, -1, dtype=torch.float64) / (after + 1))
    return weight


def tile_count(height: int, width: int, tile: int, overlap: int) -> int:
    return len(tile_starts(height, tile, overlap)) * len(tile_starts(width, tile, overlap))


def tiled_apply(image: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], tile: int, overlap: int,
                on_tile: Callable[[], None] | None = None, scale: int = 1) -> torch.Tensor:
    """Run ``fn`` over ``[B, C, H, W]`` tile by tile and blend the overlaps linearly.

    ``fn`` keeps the size (``scale=1``) or shrinks it ``scale`` times (e.g. a map on a coarser grid; then
    ``H``, ``W``, ``tile`` and ``overlap`` must be multiples of ``scale``). The accumulators live on the
    image's device and dtype float32; each tile goes through ``fn`` alone.
    """
    if tile <= 0 or overlap < 0 or overlap >= tile:
        raise ValueError(f"need tile > overlap >= 0, got tile={tile}, overlap={overlap}")
    b, _, h, w = image.shape
    if scale < 1 or any(v % scale for v in (h, w, tile, overlap)):
        raise ValueError(f"image {h}x{w}, tile {tile} and overlap {overlap} must be multiples of the scale {scale}")
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    s = scale
    out = weights = None
    for i, top in enumerate(rows):
        th = min(tile, h)
        above = rows[i - 1] + th - top if i else 0
        below = top + th - rows[i + 1] if i + 1 < len(rows) else 0
        wy = blend_ramp(th // s, above // s, below // s)
        for j, left in enumerate(cols):
            tw = min(tile, w)
            before = cols[j - 1] + tw - left if j else 0
            after = left + tw - cols[j + 1] if j + 1 < len(cols) else 0
            result = fn(image[..., top:top + th, left:left + tw])
            if out is None:
                out = torch.zeros(b, result.shape[1], h // s, w // s, dtype=torch.float32, device=result.device)
                weights = torch.zeros(1, 1, h // s, w // s, dtype=torch.float32, device=result.device)
            mask = (wy[:, None] * blend_ramp(tw // s, before // s, after // s)[None, :]).to(out)
            region = (..., slice(top // s, (top + th) // s), slice(left // s, (left + tw) // s))
            out[region] += result.float() * mask
            weights[region] += mask
            if on_tile:
                on_tile()
    return out / weights
