"""FideDiff's Kernel ControlNet (KCN): the blur kernels injected as a filter, then a ControlNet.

The injection, as the paper writes it (notes §4):

    z_in1 = Conv(z_t)                  conv_in, copied from the base UNet
    z_in2 = Conv(z_in1)                filter_features (3x3)
    W     = Conv(Cat(k_in, z_in2))     filter_weights (3x3), acts like attention weights
    O     = W ⊙ z_in2
    z_out = z_in1 + Z(O)               filter_out (1x1), zero-initialised

``z_out`` then runs through a copy of the base UNet's encoder (time embedding, down blocks, middle
block), and each feature map through its zero convolution gives the residuals added to the base
UNet's skip connections and middle block. With ``filter_out`` and the zero convolutions at zero the
residuals are exactly zero, so the controlled UNet equals the base UNet bit for bit.

``k_in`` is the per-pixel kernel map ``[B, m², h, w]`` at latent resolution (average-pooled kernels;
the estimator's ``KernelEstimate.kernel_map``); its channel count is read from the weights' shapes.
"""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..common.checkpoint import CheckpointError
from ..common.state_dict import shape_of
from ..sd21 import HintControlNet, UNetConfig
from ..sd21.lora import lora_layers

COPIED_FROM_UNET = ("conv_in", "time_embedding", "down_blocks", "mid_block")


class KernelControlNet(HintControlNet):
    def __init__(self, config: UNetConfig, kernel_channels: int):
        super().__init__(replace(config, out_channels=0))
        width = config.widths[0]
        self.filter_features = nn.Conv2d(width, width, 3, padding=1)
        self.filter_weights = nn.Conv2d(width + kernel_channels, width, 3, padding=1)
        self.filter_out = nn.Conv2d(width, width, 1)
        self.zero_outputs()

    @property
    def kernel_channels(self) -> int:
        return self.filter_weights.in_channels - self.filter_features.out_channels

    @torch.no_grad()
    def zero_outputs(self) -> None:
        """Zero ``Z`` and every zero convolution: the residuals vanish (training starts here)."""
        for conv in [self.filter_out, self.controlnet_mid_block, *self.controlnet_down_blocks]:
            conv.weight.zero_()
            conv.bias.zero_()

    @classmethod
    def from_unet(cls, unet: nn.Module, config: UNetConfig, kernel_channels: int) -> "KernelControlNet":
        """A KCN whose encoder is a copy of ``unet``'s (LoRA adapters must be merged first)."""
        if lora_layers(unet):
            raise ValueError("merge the UNet's LoRA adapters before copying its encoder into the Kernel ControlNet")
        net = cls(config, kernel_channels)
        for name in COPIED_FROM_UNET:
            getattr(net, name).load_state_dict(getattr(unet, name).state_dict())
        return net.to(unet.conv_in.weight.dtype)

    @staticmethod
    def kernel_channels_of(state: dict, source: str) -> int:
        width = shape_of(state, "filter_features.weight", source)[0]
        total = shape_of(state, "filter_weights.weight", source)[1]
        if total <= width:
            raise CheckpointError(source, f"Kernel ControlNet filter takes {total} channels, fewer than its {width} features")
        return total - width

    def inject(self, sample: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        """``z_out`` from the noisy latent and ``k_in``."""
        if kernels.shape[1] != self.kernel_channels or kernels.shape[-2:] != sample.shape[-2:]:
            raise ValueError(f"Kernel ControlNet needs a kernel map [B, {self.kernel_channels}, {sample.shape[-2]}, "
                             f"{sample.shape[-1]}], got {tuple(kernels.shape)}")
        z1 = self.conv_in(sample)
        z2 = self.filter_features(z1)
        weights = self.filter_weights(torch.cat([kernels.to(z2.dtype), z2], dim=1))
        return z1 + self.filter_out(weights * z2)

    def forward(self, sample: torch.Tensor, kernels: torch.Tensor, timestep: torch.Tensor,
                context: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        timestep = torch.as_tensor(timestep, dtype=torch.float32, device=sample.device)
        emb = self.time_embedding(self.time_proj(timestep.expand(sample.shape[0])).to(sample.dtype))
        if context.shape[0] != sample.shape[0]:
            context = context.expand(sample.shape[0], -1, -1)
        return self.residuals(self.inject(sample, kernels), emb, context.to(sample.dtype))
