"""ComfyUI ``IMAGE`` tensors (``[B, H, W, C]`` in 0..1) to model input and back.

RGB goes through the model; a fourth (alpha) channel is carried around it untouched; a single grey
channel is repeated to RGB and the result averaged back to grey.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SplitImage:
    rgb: torch.Tensor  # [B, 3, H, W] float32
    alpha: torch.Tensor | None  # [B, H, W, 1] as given
    channels: int


def split_image(image, name: str = "image") -> SplitImage:
    if not isinstance(image, torch.Tensor) or image.ndim != 4:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"{name}: expected an IMAGE tensor [batch, height, width, channels], got {shape}")
    channels = image.shape[-1]
    if channels not in (1, 3, 4):
        raise ValueError(f"{name}: expected 1, 3 or 4 channels (grey, RGB, RGBA), got {channels}")
    if image.shape[0] == 0 or image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"{name}: the image is empty ({tuple(image.shape)})")
    if not torch.isfinite(image).all():
        raise ValueError(f"{name}: the image contains NaN or infinite values; check the node that produced it")
    image = image.float()
    alpha = image[..., 3:] if channels == 4 else None
    rgb = image[..., :3] if channels != 1 else image.expand(*image.shape[:3], 3)
    return SplitImage(rgb.permute(0, 3, 1, 2).contiguous(), alpha, channels)


def join_image(rgb: torch.Tensor, like: SplitImage, device: torch.device) -> torch.Tensor:
    """Model output ``[B, 3, H, W]`` → clamped ``IMAGE`` with the input's channel layout."""
    out = rgb.float().clamp(0, 1).permute(0, 2, 3, 1).to(device)
    if like.channels == 1:
        return out.mean(-1, keepdim=True)
    if like.alpha is not None:
        return torch.cat([out, like.alpha.to(device)], dim=-1)
    return out.contiguous()
