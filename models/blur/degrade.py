"""What a camera adds around the blur: its response curve, sensor noise and JPEG compression.

Blur happens in linear light, so synthesis maps the stored values to linear with the inverse
response (a gamma curve; 2.2 is close to sRGB), blurs, and maps back; a bright highlight then smears
into a bright streak rather than a grey smudge. Noise is added after the response (as in the stored
image); JPEG goes through Pillow so the artefacts are those of a real encoder.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def to_linear(x: torch.Tensor, gamma: float) -> torch.Tensor:
    return x if gamma == 1 else x.clamp(0, 1) ** gamma


def from_linear(x: torch.Tensor, gamma: float) -> torch.Tensor:
    return x if gamma == 1 else x.clamp(0, 1) ** (1.0 / gamma)


def add_noise(x: torch.Tensor, sigma: float, generator: torch.Generator | None = None, shot: float = 0.0) -> torch.Tensor:
    """Gaussian read noise of std ``sigma`` plus signal-dependent shot noise of std ``shot·√x``."""
    if sigma <= 0 and shot <= 0:
        return x
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x)
    std = sigma + shot * x.clamp(min=0).sqrt() if shot > 0 else sigma
    return x + noise * std


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Round-trip ``[B, C, H, W]`` (C = 1 or 3) through Pillow's JPEG encoder at ``quality`` (1–100)."""
    if not 1 <= quality <= 100:
        raise ValueError(f"JPEG quality must be 1..100, got {quality}")
    out = []
    for image in x:
        array = (image.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buffer, "JPEG", quality=int(quality))
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L" if array.shape[-1] == 1 else "RGB"))
        decoded = decoded[..., None] if decoded.ndim == 2 else decoded
        out.append(torch.from_numpy(decoded.copy()).permute(2, 0, 1).float() / 255.0)
    return torch.stack(out).to(x)
