"""The denoisers of HI-Diff's prior diffusion, both official variants:

* ``MixerDenoiser`` (official ``denoising``, GoPro release): token-mixer MLP over ``[x, t, c]``.
* ``SimpleDenoiser`` (official ``simple_denoise``, RealBlur releases): a plain MLP over ``[c, t, x]``.

Both take ``time`` as a ``[B, N]`` tensor of step indices (already offset by the sampler).
"""
from __future__ import annotations

import torch
from torch import nn

from ..common.checkpoint import CheckpointError
from ..common.state_dict import count_indexed
from .mixer import TokenMixer


class MixerDenoiser(nn.Module):
    kind = "mixer"

    def __init__(self, channels: int, inner: int, blocks: int, mixer_sizes: tuple[int, int, int] | None,
                 out_channels: int | None = None):
        super().__init__()
        self.time_mlp = nn.Parameter(1e-3 * torch.ones(1))
        self.first_layer = nn.Sequential(nn.Linear(channels * 3, inner), nn.LeakyReLU(0.2))
        self.blocks = nn.ModuleList(
            nn.Sequential(TokenMixer(mixer_sizes[0], inner, mixer_sizes[1], mixer_sizes[2]), nn.GELU())
            for _ in range(blocks)
        )
        self.final_layer = nn.Sequential(nn.Linear(inner, out_channels or channels), nn.GELU())

    @classmethod
    def standard(cls, channels=256, inner=512, block_num=4, group=4, patch_expansion=0.5, channel_expansion=2):
        sizes = (group * group, int(patch_expansion * group * group), int(channel_expansion * inner))
        return cls(channels, inner, block_num - 2, sizes)

    @classmethod
    def from_state_dict(cls, state: dict) -> "MixerDenoiser":
        inner, features = state["first_layer.0.weight"].shape
        blocks = count_indexed(state, "blocks.")
        sizes = None
        if blocks:
            tokens, _, token_hidden, channel_hidden = TokenMixer.sizes(state, "blocks.0.0.")
            sizes = (tokens, token_hidden, channel_hidden)
        return cls(features // 3, inner, blocks, sizes, state["final_layer.0.weight"].shape[0])

    def forward(self, x, condition, time):
        t = time.unsqueeze(-1).expand(*time.shape, x.shape[-1]) * self.time_mlp
        x = self.first_layer(torch.cat([x, t, condition], dim=-1))
        for block in self.blocks:
            x = block(x)
        return self.final_layer(x)


class _LinearLReLU(nn.Module):
    """Official ``ResMLP``: despite the name, no residual connection."""

    def __init__(self, features: int):
        super().__init__()
        self.resmlp = nn.Sequential(nn.Linear(features, features), nn.LeakyReLU(0.1))

    def forward(self, x):
        return self.resmlp(x)


class SimpleDenoiser(nn.Module):
    kind = "simple"

    def __init__(self, channels: int, layers: int, max_period: int = 50):
        super().__init__()
        # The step index is divided by 10 x the constructor's ``timesteps`` argument, which the
        # released RealBlur configs leave at its default of 5 (although they sample 16 steps).
        self.max_period = max_period
        self.resmlp = nn.Sequential(
            nn.Linear(channels * 2 + 1, channels), nn.LeakyReLU(0.1), *(_LinearLReLU(channels) for _ in range(layers)))

    @classmethod
    def from_state_dict(cls, state: dict) -> "SimpleDenoiser":
        channels = state["resmlp.0.weight"].shape[0]
        layers = sum(1 for k in state if k.startswith("resmlp.") and k.endswith(".resmlp.0.weight"))
        return cls(channels, layers)

    def forward(self, x, condition, time):
        t = time.float().unsqueeze(-1) / self.max_period
        return self.resmlp(torch.cat([condition, t, x], dim=-1))


def build_denoiser(state: dict, source: str = "checkpoint") -> nn.Module:
    """The denoiser variant the checkpoint holds."""
    if "first_layer.0.weight" in state:
        return MixerDenoiser.from_state_dict(state)
    if "resmlp.0.weight" in state:
        return SimpleDenoiser.from_state_dict(state)
    raise CheckpointError(source, "is not an HI-Diff denoiser (neither 'first_layer.0.weight' nor 'resmlp.0.weight')")
