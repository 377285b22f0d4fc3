"""Procedural "dead leaves" images: overlapping discs with power-law radii and random colours.

Their edges at every scale and their scale-invariant statistics resemble natural images (Lee,
Mumford & Huang 2001), which makes them a licence-free source of sharp training images; a seed
fixes the image. Rendered at twice the size and averaged down, so edges are anti-aliased.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def dead_leaves(size: int, generator: torch.Generator | None = None, min_radius: float = 2.0,
                max_radius: float | None = None, exponent: float = 3.0, coverage: float = 6.0) -> torch.Tensor:
    """A ``[3, size, size]`` image in 0..1. Radii follow ``p(r) ∝ r^-exponent`` on
    ``[min_radius, max_radius]``; discs are added until their area is ``coverage`` × the canvas."""
    scale = 2
    side = size * scale
    r_min, r_max = min_radius * scale, (max_radius or size / 4) * scale
    canvas = torch.zeros(3, side, side)
    filled = torch.zeros(side, side, dtype=torch.bool)
    ys = torch.arange(side, dtype=torch.float32)[:, None]
    xs = torch.arange(side, dtype=torch.float32)[None, :]
    area, target = 0.0, coverage * side * side
    a = 1.0 - exponent
    while area < target and not filled.all():
        u, cx, cy = torch.rand(3, generator=generator).tolist()
        # inverse CDF of the truncated power law
        r = ((r_max ** a - r_min ** a) * u + r_min ** a) ** (1.0 / a)
        colour = torch.rand(3, generator=generator)
        shade = torch.rand(2, generator=generator) - 0.5  # a gentle linear shading across the leaf
        cx, cy = cx * side, cy * side
        top, bottom = max(int(cy - r), 0), min(int(cy + r) + 1, side)
        left, right = max(int(cx - r), 0), min(int(cx + r) + 1, side)
        if top >= bottom or left >= right:
            continue
        dy, dx = ys[top:bottom] - cy, xs[:, left:right] - cx
        disc = (dy ** 2 + dx ** 2 <= r * r) & ~filled[top:bottom, left:right]  # earlier leaves lie on top
        if disc.any():
            tint = 1.0 + 0.3 * (shade[0] * dx + shade[1] * dy) / r
            canvas[:, top:bottom, left:right] = torch.where(disc, (colour[:, None, None] * tint).clamp(0, 1),
                                                            canvas[:, top:bottom, left:right])
            filled[top:bottom, left:right] |= disc
        area += 3.14159 * r * r
    return F.avg_pool2d(canvas[None], scale)[0]
