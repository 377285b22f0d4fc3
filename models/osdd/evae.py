"""OSDD's enhanced VAE (eVAE): the SD autoencoder whose decoder also sees the blurry image's encoder
features ("skips"), one per resolution, so detail the 8x latent cannot hold comes straight from the input.

Encoder level ``k`` (channels ``C_k`` at ``1/2**k`` of the image) keeps its output after its resnets,
before its down-sampler. The decoder's up block of the same resolution receives it after its resnets,
before its up-sampler, through a :class:`SkipBlock` (concatenate, small conv block, residual add).
The block's last GroupNorm starts at zero, so an untrained eVAE decodes exactly (bit for bit) like the
plain autoencoder. Latents are the autoencoder's own (unscaled), as in :mod:`..sd21.vae`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..sd21.tiles import sliding_tiles, tiled_prediction
from ..sd21.vae import AutoencoderKL


def _groups(channels: int, wanted: int) -> int:
    return math.gcd(channels, wanted)


class SkipBlock(nn.Module):
    """``h + SiLU(GN(conv1x1(SiLU(GN(conv3x3(cat(h, conv1x1(skip))))))))``; the 3x3 bottleneck (the
    notes' design has 1x1) lets the block filter the blurry feature spatially even at the finest level,
    where only the decoder's output conv follows. The last GroupNorm is zero, so the block starts as 0."""

    def __init__(self, channels: int):
        super().__init__()
        inner = max(channels // 4, 1)
        self.skip_conv = nn.Conv2d(channels, channels, 1, bias=False)
        self.conv1 = nn.Conv2d(2 * channels, inner, 3, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(_groups(inner, 8), inner)
        self.conv2 = nn.Conv2d(inner, channels, 1, bias=False)
        self.norm2 = nn.GroupNorm(_groups(channels, 16), channels)
        nn.init.zeros_(self.norm2.weight)
        nn.init.zeros_(self.norm2.bias)

    def forward(self, h: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = torch.cat([h, self.skip_conv(skip.to(h.dtype))], dim=1)
        x = F.silu(self.norm1(self.conv1(x)))
        return h + F.silu(self.norm2(self.conv2(x)))


@dataclass
class Skips:
    """The ``EVAE_SKIPS`` passed between nodes: encoder features per level (finest first) of one image
    batch, and the latent size they belong to."""
    features: list[torch.Tensor]
    latent_size: tuple[int, int]  # (h, w) of the matching latent

    def to(self, device=None, dtype=None) -> "Skips":
        return Skips([f.to(device=device, dtype=dtype) for f in self.features], self.latent_size)

    def crop(self, top: int, bottom: int, left: int, right: int, downsampling: int) -> "Skips":
        """The features under latent box ``[top:bottom, left:right]`` at every level."""
        out = []
        for level, f in enumerate(self.features):
            s = downsampling >> level
            out.append(f[:, :, top * s:bottom * s, left * s:right * s])
        return Skips(out, (bottom - top, right - left))

    def select(self, index: torch.Tensor | slice) -> "Skips":
        return Skips([f[index] for f in self.features], self.latent_size)


class SkipMismatch(ValueError):
    pass


class EVAE(nn.Module):
    """An :class:`~..sd21.vae.AutoencoderKL` plus one :class:`SkipBlock` per level (``skips.<k>``)."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae
        self.config = vae.config
        self.skips = nn.ModuleList(SkipBlock(vae.config.channels * m) for m in vae.config.channel_mult)

    @property
    def dtype(self) -> torch.dtype:
        return self.vae.dtype

    @property
    def downsampling(self) -> int:
        return self.config.downsampling

    # encoder -----------------------------------------------------------------------------------
    def encode_with_skips(self, image: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, Skips]:
        """``[B, C, H, W]`` in -1..1 → (latent, skips); the latent equals ``vae.encode`` exactly
        (posterior mean, or a sample with noise from ``generator``)."""
        enc = self.vae.encoder
        h = enc.conv_in(image.to(self.dtype))
        features = []
        for block in enc.down_blocks:
            for resnet in block.resnets:
                h = resnet(h, temb=None)
            features.append(h)
            for down in block.downsamplers or ():
                h = down(h)
        h = enc.conv_out(enc.conv_act(enc.conv_norm_out(enc.mid_block(h))))
        mean, logvar = self.vae.quant_conv(h).float().chunk(2, dim=1)
        latent = mean
        if generator is not None:
            noise = torch.randn(mean.shape, generator=generator, device=generator.device).to(mean.device)
            latent = mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise
        return latent, Skips(features, tuple(latent.shape[-2:]))

    def encode_tiled(self, image: torch.Tensor, tile: int, stride: int, generator: torch.Generator | None = None,
                     on_tile=None) -> tuple[torch.Tensor, Skips]:
        """Tiles of ``tile`` pixels every ``stride``, each written over the latent and over every skip
        level at the same place (later tiles win), as :meth:`AutoencoderKL.encode_tiled` does."""
        f = self.downsampling
        b, _, h, w = image.shape
        latent = torch.zeros((b, self.config.latent_channels, h // f, w // f), dtype=torch.float32, device=image.device)
        features = [torch.zeros((b, self.config.channels * m, h >> k, w >> k), dtype=self.dtype, device=image.device)
                    for k, m in enumerate(self.config.channel_mult)]
        for top, bottom, left, right in sliding_tiles(h // f, w // f, tile // f, stride // f):
            part, skips = self.encode_with_skips(image[:, :, top * f:bottom * f, left * f:right * f], generator)
            latent[:, :, top:bottom, left:right] = part
            for k, feature in enumerate(skips.features):
                s = f >> k
                features[k][:, :, top * s:bottom * s, left * s:right * s] = feature
            if on_tile:
                on_tile()
        return latent, Skips(features, (h // f, w // f))

    # decoder -----------------------------------------------------------------------------------
    def check_skips(self, latent: torch.Tensor, skips: Skips) -> None:
        f, (h, w) = self.downsampling, latent.shape[-2:]
        if len(skips.features) != len(self.skips):
            raise SkipMismatch(f"eVAE skips have {len(skips.features)} levels but this eVAE has {len(self.skips)}")
        if tuple(skips.latent_size) != (h, w):
            sh, sw = skips.latent_size
            raise SkipMismatch(f"eVAE skips belong to a {sw}x{sh} latent ({sw * f}x{sh * f} image) but the latent "
                               f"to decode is {w}x{h} ({w * f}x{h * f}); encode the same image size you decode")
        for k, (feature, block) in enumerate(zip(skips.features, self.skips)):
            want = (block.skip_conv.in_channels, (h * f) >> k, (w * f) >> k)
            if tuple(feature.shape[1:]) != want:
                raise SkipMismatch(f"eVAE skip level {k} is {tuple(feature.shape[1:])}, expected {want} (channels, h, w): "
                                   "skips from another eVAE?")
        if skips.features[0].shape[0] not in (1, latent.shape[0]):
            raise SkipMismatch(f"eVAE skips hold {skips.features[0].shape[0]} images but the latent batch is {latent.shape[0]}")

    def decode(self, latent: torch.Tensor, skips: Skips | None = None) -> torch.Tensor:
        """Latent → image in -1..1 (float32); without skips exactly the plain autoencoder's decoding."""
        if skips is not None:
            self.check_skips(latent, skips)
        dec = self.vae.decoder
        h = dec.mid_block(dec.conv_in(self.vae.post_quant_conv(latent.to(self.dtype))), None)
        levels = len(dec.up_blocks)
        for j, block in enumerate(dec.up_blocks):
            for resnet in block.resnets:
                h = resnet(h, temb=None)
            if skips is not None:
                level = levels - 1 - j
                feature = skips.features[level].to(h.device)
                h = self.skips[level](h, feature.expand(h.shape[0], -1, -1, -1))
            for up in block.upsamplers or ():
                h = up(h)
        return dec.conv_out(dec.conv_act(dec.conv_norm_out(h))).float()

    def decode_tiled(self, latent: torch.Tensor, skips: Skips | None, tile: int, stride: int, on_tile=None) -> torch.Tensor:
        """Latent tiles of ``tile`` every ``stride`` (latent pixels), each decoded with the skips under
        it at every level, blended as ``AutoencoderKL.decode_tiled`` does."""
        if skips is not None:
            self.check_skips(latent, skips)

        def decode(box):
            part = skips.crop(*box, self.downsampling) if skips is not None else None
            return self.decode(latent[:, :, box[0]:box[1], box[2]:box[3]], part)

        return tiled_prediction(decode, latent, tile, stride, on_tile, self.downsampling, self.config.out_channels)
