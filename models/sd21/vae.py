"""The KL-f8 autoencoder of Stable Diffusion on diffusers' ``AutoencoderKL``, with seeded posterior
sampling and DiffBIR's tiled encode/decode.

Latents here are the autoencoder's own (unscaled); multiplying by ``scale_factor`` (0.18215 for
SD 2.x) gives the diffusion space.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..common.checkpoint import CheckpointError
from ..common.state_dict import count_indexed, shape_of
from .tiles import sliding_tiles, tiled_prediction
from .unet import GROUPS


@dataclass(frozen=True)
class VAEConfig:
    in_channels: int = 3
    out_channels: int = 3
    channels: int = 128
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    latent_channels: int = 4

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VAEConfig":
        return cls(**{**data, "channel_mult": tuple(data["channel_mult"])})

    @classmethod
    def from_ldm(cls, state: dict, source: str) -> "VAEConfig":
        first = shape_of(state, "encoder.conv_in.weight", source)
        channels, in_channels = first[0], first[1]
        levels = count_indexed(state, "encoder.down.")
        if levels == 0:
            raise CheckpointError(source, "no autoencoder encoder levels ('encoder.down.0.…') found")
        widths = [shape_of(state, f"encoder.down.{i}.block.0.conv1.weight", source)[0] for i in range(levels)]
        if any(w % channels or w % GROUPS for w in widths):
            raise CheckpointError(source, f"unsupported autoencoder widths {widths}")
        if any(k.startswith(("encoder.down.", "decoder.up.")) and ".attn." in k for k in state):
            raise CheckpointError(source, "unsupported autoencoder: attention inside the levels (SD's has it only in the middle)")
        latent = shape_of(state, "quant_conv.weight", source)[0] // 2
        z_channels = shape_of(state, "encoder.conv_out.weight", source)[0] // 2
        if latent != z_channels:
            raise CheckpointError(source, f"unsupported autoencoder: z_channels {z_channels} != embed_dim {latent}")
        out_channels = shape_of(state, "decoder.conv_out.weight", source)[0]
        return cls(in_channels, out_channels, channels, tuple(w // channels for w in widths),
                   count_indexed(state, "encoder.down.0.block."), latent)

    def diffusers_kwargs(self) -> dict:
        levels = len(self.channel_mult)
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
                    block_out_channels=tuple(self.channels * m for m in self.channel_mult),
                    layers_per_block=self.num_res_blocks, latent_channels=self.latent_channels, norm_num_groups=GROUPS)


class AutoencoderKL(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        from diffusers import AutoencoderKL as DiffusersAutoencoderKL

        net = DiffusersAutoencoderKL(**config.diffusers_kwargs())
        for name, child in net.named_children():
            self.add_module(name, child)
        self.config = config

    @property
    def dtype(self) -> torch.dtype:
        return self.quant_conv.weight.dtype

    def moments(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (clamped, as LDM does) log-variance of the posterior, float32."""
        moments = self.quant_conv(self.encoder(image.to(self.dtype))).float()
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[B, C, H, W]`` → latent: a posterior sample with noise from ``generator`` (drawn on the
        generator's device, as ``torch.randn`` of the mean's shape), or the mean without one."""
        mean, logvar = self.moments(image)
        if generator is None:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=generator.device).to(mean.device)
        return mean + torch.exp(0.5 * logvar) * noise

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(latent.to(self.dtype))).float()

    def encode_tiled(self, image: torch.Tensor, tile: int, stride: int, generator: torch.Generator | None = None,
                     on_tile=None) -> torch.Tensor:
        """DiffBIR's tiled encoding: tiles of ``tile`` pixels every ``stride``, each written over the
        latent (no blending: later tiles win), noise drawn per tile in tile order."""
        f = self.config.downsampling
        b, _, h, w = image.shape
        latent = torch.zeros((b, self.config.latent_channels, h // f, w // f), dtype=torch.float32, device=image.device)
        for top, bottom, left, right in sliding_tiles(h // f, w // f, tile // f, stride // f):
            latent[:, :, top:bottom, left:right] = self.encode(image[:, :, top * f:bottom * f, left * f:right * f], generator)
            if on_tile:
                on_tile()
        return latent

    def decode_tiled(self, latent: torch.Tensor, tile: int, stride: int, on_tile=None) -> torch.Tensor:
        """DiffBIR's tiled decoding: latent tiles of ``tile`` every ``stride`` (latent pixels), blended
        with :func:`gaussian_weights`."""
        return tiled_prediction(lambda box: self.decode(latent[:, :, box[0]:box[1], box[2]:box[3]]), latent, tile, stride,
                                on_tile, self.config.downsampling, self.config.out_channels)
