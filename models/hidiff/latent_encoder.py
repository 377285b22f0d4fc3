"""HI-Diff's latent encoder: compresses an image (stage two: the blurry one; stage one: sharp and
blurry concatenated) into ``group²`` prior tokens of ``4*embed_dim`` channels.

Two official variants exist: ``latent_encoder_gelu`` (GoPro release) and ``latent_encoder_lrelu``
(RealBlur releases); the checkpoint's keys tell them apart.
"""
from __future__ import annotations

from dataclasses import dataclass, asdict

import torch
from torch import nn

from ..common.state_dict import count_indexed, shape_of
from .mixer import TokenMixer


@dataclass
class LatentEncoderConfig:
    in_channels: int = 3  # 3 for LE_DM (blurry only), 6 for the stage-one LE (sharp + blurry)
    embed_dim: int = 64
    blocks: int = 6
    group: int = 4
    activation: str = "gelu"  # "gelu" or "lrelu"
    token_hidden: int = 8  # int(patch_expansion * group²)
    channel_hidden: int = 256  # int(channel_expansion * mixer width)

    @classmethod
    def standard(cls, in_channels=3, embed_dim=64, block_num=6, group=4, activation="gelu",
                 patch_expansion=0.5, channel_expansion=4) -> "LatentEncoderConfig":
        width = embed_dim if activation == "gelu" else embed_dim * 4
        return cls(in_channels, embed_dim, block_num, group, activation,
                   int(patch_expansion * group * group), int(channel_expansion * width))

    @classmethod
    def from_state_dict(cls, state: dict, source: str = "checkpoint") -> "LatentEncoderConfig":
        embed_dim, in_features = shape_of(state, "conv1.0.weight", source)[:2]
        shape_of(state, "mlp.patch_mixer.0.weight", source)
        tokens, _, token_hidden, channel_hidden = TokenMixer.sizes(state, "mlp.")
        return cls(
            in_channels=in_features // 16, embed_dim=embed_dim, blocks=count_indexed(state, "blocks."),
            group=round(tokens ** 0.5), activation="lrelu" if "conv2.0.weight" in state else "gelu",
            token_hidden=token_hidden, channel_hidden=channel_hidden,
        )

    def to_dict(self) -> dict:
        return asdict(self)


class LatentEncoder(nn.Module):
    def __init__(self, config: LatentEncoderConfig):
        super().__init__()
        self.config = config
        e, lrelu = config.embed_dim, config.activation == "lrelu"
        act = (lambda: nn.LeakyReLU(0.1)) if lrelu else nn.GELU
        self.pixel_unshuffle = nn.PixelUnshuffle(4)
        self.conv1 = nn.Sequential(nn.Conv2d(config.in_channels * 16, e, 3, padding=1), act())
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(e, e, 3, padding=1), act(), nn.Conv2d(e, e, 3, padding=1))
            for _ in range(config.blocks)
        )
        if lrelu:
            self.conv2 = nn.Sequential(
                nn.Conv2d(e, e * 2, 3, padding=1), act(), nn.Conv2d(e * 2, e * 2, 3, padding=1), act(),
                nn.Conv2d(e * 2, e * 4, 3, padding=1), act())
        else:
            self.conv2 = nn.Conv2d(e, e, 3, padding=1)
        width = e * 4 if lrelu else e
        self.pool = nn.AdaptiveAvgPool2d((config.group, config.group))
        self.mlp = TokenMixer(config.group ** 2, width, config.token_hidden, config.channel_hidden)
        self.end = nn.Sequential(nn.Linear(width, e * 4), act())

    def forward(self, image: torch.Tensor, sharp: torch.Tensor | None = None) -> torch.Tensor:
        x = image if sharp is None else torch.cat([sharp, image], dim=1)
        x = self.conv1(self.pixel_unshuffle(x))
        for block in self.blocks:
            x = block(x) + x
        x = self.pool(self.conv2(x)).flatten(2).transpose(1, 2)  # [B, group², C]
        return self.end(self.mlp(x))
