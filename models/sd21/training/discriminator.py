"""A latent-space discriminator built from the SD UNet's encoder (FideDiff §5, OSDD's figure).

``conv_in`` + time embedding + down blocks + middle block are deep copies of a UNet's (so D starts
from the pretrained features), followed by 3 × [Conv3x3-GroupNorm-SiLU] and a 1x1 convolution that
gives one real/fake logit per latent patch. The losses are the non-saturating ones written with
softplus: ``D: softplus(-D(real)) + softplus(D(fake))``, ``G: softplus(-D(fake))``.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..unet import GROUPS

ENCODER_PARTS = ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block")


class LatentDiscriminator(nn.Module):
    def __init__(self, unet: nn.Module, head_layers: int = 3):
        super().__init__()
        for name in ENCODER_PARTS:
            self.add_module(name, copy.deepcopy(getattr(unet, name)))
        width = unet.config.block_out_channels[-1]
        layers = []
        for _ in range(head_layers):
            layers += [nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(min(GROUPS, width), width), nn.SiLU()]
        self.head = nn.Sequential(*layers, nn.Conv2d(width, 1, 1))
        self.requires_grad_(True)

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor | float, context: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` latent → ``[B, 1, h/2^k, w/2^k]`` patch logits."""
        batch = latent.shape[0]
        t = torch.as_tensor(timestep, dtype=torch.float32, device=latent.device)
        t = t.expand(batch) if t.dim() == 0 else t
        emb = self.time_embedding(self.time_proj(t).to(latent.dtype))
        context = context.expand(batch, -1, -1) if context.shape[0] != batch else context
        h = self.conv_in(latent)
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, encoder_hidden_states=context)
            else:
                h, _ = block(hidden_states=h, temb=emb)
        h = self.mid_block(h, emb, encoder_hidden_states=context)
        return self.head(h)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.softplus(-fake_logits).mean()
