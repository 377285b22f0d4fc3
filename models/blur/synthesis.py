"""Synthetic blurry/sharp pairs: kernels drawn from a seeded generator, applied in linear light,
then noise and JPEG. One function for the node, the training data and the evaluation set, so all
three see the same degradation. :class:`BlurMix` draws different settings per training sample, so a
model meets the variety of real photos (blur in linear light or in stored values, shake or straight
motion, noise, JPEG, and sharp inputs that must come back unchanged)."""
from __future__ import annotations

from dataclasses import dataclass, asdict, field

import torch

from .blur_kernel import make_blur_kernel
from .convolve import blur
from .degrade import add_noise, from_linear, jpeg, to_linear
from .trajectory import check_size, random_kernel

KINDS = ("camera_shake", "linear")


@dataclass
class BlurSettings:
    kind: str = "camera_shake"  # 'camera_shake' (Boracchi & Foi trajectories) or 'linear'
    kernel_size: int = 31
    intensity: tuple[float, float] = (0.5, 0.5)  # path length / (k - 1), drawn uniformly in the range
    grid: int = 1  # > 1: grid x grid independent kernels blended over the image (spatially varying)
    noise: tuple[float, float] = (0.0, 0.0)  # Gaussian noise std (0..1 units), drawn in the range
    gamma: float = 1.0  # camera response: blur in linear light (2.2 ≈ sRGB); 1 = blur stored values
    jpeg_quality: int = 0  # 0 = no JPEG
    border: str = "reflect"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        check_size(self.kernel_size)
        if self.kind not in KINDS:
            raise ValueError(f"unknown kernel kind {self.kind!r}; use one of {', '.join(KINDS)}")
        self.intensity = _range(self.intensity, "intensity", 0.0, 1.0)
        self.noise = _range(self.noise, "noise", 0.0, 1.0)
        if self.grid < 1:
            raise ValueError(f"grid must be >= 1, got {self.grid}")

    def to_dict(self) -> dict:
        return asdict(self)


def _range(value, name: str, low: float, high: float) -> tuple[float, float]:
    a, b = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if not low <= a <= b <= high:
        raise ValueError(f"{name} range must satisfy {low} <= min <= max <= {high}, got ({a}, {b})")
    return float(a), float(b)


@dataclass
class BlurMix:
    """A random :class:`BlurSettings` per training sample (or ``None``: a sharp pair, input = target).

    Real photos are blurred in linear light by the optics, but many pictures people want to fix were
    blurred again in stored (sRGB) values by software or resizing; a model trained on one only learns
    to push brightness the other way. Sharp pairs teach it to leave sharp photos (and colours) alone.
    """
    kernel_size: int = 31
    intensity: tuple[float, float] = (0.1, 1.0)
    linear_share: float = 0.3  # straight-line motion instead of camera shake
    srgb_share: float = 0.5  # blur applied to the stored values instead of linear light
    gamma: float = 2.2
    sharp_share: float = 0.1
    noise: tuple[float, float] = (0.0, 0.02)
    jpeg_share: float = 0.3
    jpeg_quality: tuple[int, int] = (60, 95)

    def __post_init__(self):
        check_size(self.kernel_size)
        self.intensity = _range(self.intensity, "intensity", 0.0, 1.0)
        self.noise = _range(self.noise, "noise", 0.0, 1.0)
        lo, hi = (int(q) for q in self.jpeg_quality)
        if not 1 <= lo <= hi <= 100:
            raise ValueError(f"JPEG quality range must satisfy 1 <= min <= max <= 100, got ({lo}, {hi})")
        self.jpeg_quality = (lo, hi)
        for name in ("linear_share", "srgb_share", "sharp_share", "jpeg_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in 0..1, got {getattr(self, name)}")

    def draw(self, generator: torch.Generator | None = None) -> BlurSettings | None:
        """The settings of one sample, drawn in a fixed order from ``generator`` (so runs resume exactly)."""
        u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
        if u[0] < self.sharp_share:
            return None
        noise = _draw(generator, self.noise)
        quality = round(self.jpeg_quality[0] + (self.jpeg_quality[1] - self.jpeg_quality[0]) * u[4]) if u[3] < self.jpeg_share else 0
        return BlurSettings(kind="linear" if u[1] < self.linear_share else "camera_shake", kernel_size=self.kernel_size,
                            intensity=self.intensity, noise=(noise, noise), gamma=1.0 if u[2] < self.srgb_share else self.gamma,
                            jpeg_quality=quality)

    def to_dict(self) -> dict:
        return asdict(self)


def _draw(generator: torch.Generator | None, bounds: tuple[float, float]) -> float:
    low, high = bounds
    if low == high:
        return low
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def draw_kernels(batch: int, settings: BlurSettings, generator: torch.Generator | None = None) -> dict:
    """A BLUR_KERNEL of ``batch`` kernel grids drawn in order from ``generator``."""
    size, g = settings.kernel_size, settings.grid
    kernels = torch.empty(batch, g, g, size, size)
    infos = []
    for b in range(batch):
        cells = []
        for r in range(g * g):
            kernel, info = random_kernel(size, _draw(generator, settings.intensity), generator, settings.kind)
            kernels[b, r // g, r % g] = kernel
            cells.append(info.to_dict())
        infos.append({**cells[0], "grid": [g, g]} if g == 1 else {"kind": settings.kind, "size": size, "grid": [g, g], "cells": cells})
    return make_blur_kernel(kernels, info=infos)


def degrade(sharp: torch.Tensor, blur_kernel: dict, settings: BlurSettings,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Blur ``[B, C, H, W]`` in 0..1 with a BLUR_KERNEL, then add noise and JPEG as ``settings`` say."""
    linear = to_linear(sharp.float(), settings.gamma)
    blurred = from_linear(blur(linear, blur_kernel["kernels"], settings.border), settings.gamma)
    if settings.noise[1] > 0:
        sigmas = torch.tensor([_draw(generator, settings.noise) for _ in range(sharp.shape[0])])
        blurred = blurred + torch.randn(blurred.shape, generator=generator).to(blurred) * sigmas.to(blurred)[:, None, None, None]
    blurred = blurred.clamp(0, 1)
    if settings.jpeg_quality:
        blurred = jpeg(blurred, settings.jpeg_quality)
    return blurred


def synthesize(sharp: torch.Tensor, settings: BlurSettings, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """Sharp ``[B, C, H, W]`` → (blurry ``[B, C, H, W]`` in 0..1, the BLUR_KERNEL used)."""
    blur_kernel = draw_kernels(sharp.shape[0], settings, generator)
    return degrade(sharp, blur_kernel, settings, generator), blur_kernel


__all__ = ["BlurMix", "BlurSettings", "KINDS", "draw_kernels", "degrade", "synthesize", "add_noise"]
