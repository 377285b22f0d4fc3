"""The dynamic dual adapter (DDA): two LoRAs on the UNet, ``real`` (captured blur, fidelity) and
``synthetic`` (the sharp synthetic set, perceptual detail), mixed per image by γ:

    W = W0 + γ·ΔW_real + (1 − γ)·ΔW_synthetic

γ comes from the user or from :class:`DDAGate`, a small MLP on the global average of the eVAE's deepest
encoder feature (the notes' reading of "dynamic"; the paper's formula is not known). The mixing uses
the core LoRA's per-sample scales, so one batch can hold images with different γ.
"""
from __future__ import annotations

import torch
from torch import nn

from ..sd21.lora import set_scale

ADAPTERS = ("real", "synthetic")


class DDAGate(nn.Module):
    """γ ∈ (0, 1) per image from an encoder feature ``[B, C, h, w]``; starts at exactly 0.5."""

    def __init__(self, channels: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.net[2].weight)
        nn.init.zeros_(self.net[2].bias)

    @property
    def channels(self) -> int:
        return self.net[0].in_features

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        if feature.ndim != 4 or feature.shape[1] != self.channels:
            raise ValueError(f"DDA gate takes a [B, {self.channels}, h, w] feature, got {tuple(feature.shape)}")
        pooled = feature.float().mean((2, 3)).to(self.net[0].weight.dtype)
        return torch.sigmoid(self.net(pooled).float()).squeeze(1)


def check_gamma(gamma: float | torch.Tensor, batch: int) -> float | torch.Tensor:
    if isinstance(gamma, torch.Tensor):
        if gamma.ndim != 1 or gamma.shape[0] != batch:
            raise ValueError(f"γ must be one number or one per image ({batch}), got shape {tuple(gamma.shape)}")
        if not bool(((gamma >= 0) & (gamma <= 1)).all()):
            raise ValueError("γ must lie in [0, 1]")
        return gamma.float()
    if not 0.0 <= float(gamma) <= 1.0:
        raise ValueError(f"γ must lie in [0, 1], got {gamma}")
    return float(gamma)


def set_gamma(unet: nn.Module, gamma: float | torch.Tensor) -> None:
    """Scale ``real`` by γ and ``synthetic`` by 1 − γ (floats, or per-sample ``(B,)`` tensors)."""
    set_scale(unet, "real", gamma)
    set_scale(unet, "synthetic", 1.0 - gamma)
