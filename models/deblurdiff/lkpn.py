"""The Latent Kernel Prediction Network (LKPN).

A Stable-Diffusion-style UNet (official sizes: 128 channels, levels ×[1, 2, 4, 4], 2 residual blocks,
cross-attention to the 1024-wide text states) reads the condition latent and the current noisy
latent side by side (8 channels) at the current timestep and predicts, for every latent pixel, one
5×5 kernel per latent channel (4·5·5 = 100 channels). EAC applies them to the condition latent and
adds it back: the refined latent that conditions the ControlNet at that step.
"""
from __future__ import annotations

import torch
from torch import nn

from ..sd21 import UNetConfig, build_unet
from .eac import eac

KERNEL_SIZE = 5


class LKPN(nn.Module):
    def __init__(self, config: UNetConfig):
        super().__init__()
        if config.out_channels % (KERNEL_SIZE * KERNEL_SIZE):
            raise ValueError(f"LKPN predicts {KERNEL_SIZE}x{KERNEL_SIZE} kernels; {config.out_channels} output channels do not divide")
        self.config = config
        self.unet = build_unet(config)

    @property
    def groups(self) -> int:
        return self.config.out_channels // (KERNEL_SIZE * KERNEL_SIZE)

    def kernels(self, condition: torch.Tensor, noisy: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``[B, groups·25, h, w]`` per-pixel kernels (tap ``i·5 + j`` of group ``g`` at ``g·25 + i·5 + j``)."""
        merged = torch.cat([condition, noisy], dim=1)
        return self.unet(merged, timestep.expand(merged.shape[0]), encoder_hidden_states=context, return_dict=False)[0]

    def forward(self, condition: torch.Tensor, noisy: torch.Tensor, timestep: torch.Tensor,
                context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The refined latent ``EAC(condition, kernels) + condition`` and the kernels."""
        kernels = self.kernels(condition, noisy, timestep, context)
        return eac(condition, kernels, KERNEL_SIZE) + condition, kernels
