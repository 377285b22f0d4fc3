"""FideDiff at inference: encode (d = 8, or d = 4 through a ×2 upsampling), one step, decode.

* Images are ``[B, 3, H, W]`` in 0..1; the autoencoder sees them in -1..1 (SD's convention, which
  FideDiff's training in this pack uses). Any size: reflect-padded at the bottom/right to a multiple
  of the UNet's stride in image pixels (64 for d = 8, 32 for d = 4), cropped back at the end.
* d = 4 (the paper's full model; notes §1, A1, A10): bicubic ×2 upsampling before the stock SD
  autoencoder, antialiased bicubic ×0.5 after it, so the latent is H/4 × W/4 of the input.
* The step: ``ẑ0 = (z_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t`` at the (fractional) blur level t̂, the Kernel ControlNet's
  residuals added when the adapter has one and kernels are given; no noise, no guidance.
* Large latents run in Gaussian-blended tiles (DiffBIR's), so the attention stays bounded.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..sd21 import OneStepSchedule, SDBase, TextEmbedding, one_step, tiled_prediction
from ..sd21.tiles import needs_tiles
from .kcn import KernelControlNet

LATENT_DOWNSAMPLES = (4, 8)
DEFAULT_TIMESTEP = 200.0  # the paper's best constant t (11 GoPro frames) when no estimate is at hand
MAX_TIMESTEP = 400.0


class FideDiff(nn.Module):
    def __init__(self, base: SDBase, text: TextEmbedding, kcn: KernelControlNet | None = None,
                 estimator: nn.Module | None = None, latent_downsample: int = 4):
        super().__init__()
        if latent_downsample not in LATENT_DOWNSAMPLES:
            raise ValueError(f"latent_downsample must be 4 or 8, got {latent_downsample}")
        self.unet, self.vae, self.text, self.kcn, self.estimator = base.unet, base.vae, text, kcn, estimator
        # The autoencoder's full-resolution convolutions are most of the time (bench/bench_onestep.py):
        # channels-last runs them ~15% faster on the CPU's oneDNN and suits GPU tensor cores.
        self.vae.to(memory_format=torch.channels_last)
        self.schedule = OneStepSchedule(base.prediction)
        self.latent_scale = base.latent_scale
        self.latent_downsample = latent_downsample
        self.base_source = base.source
        self.fingerprint = base.fingerprint

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    def pad_multiple(self, latent_downsample: int | None = None) -> int:
        d = latent_downsample or self.latent_downsample
        unet_stride = 2 ** (len(self.unet.config.block_out_channels) - 1)
        return self.vae.config.downsampling * unet_stride // (2 if d == 4 else 1)  # d = 4 sees the image ×2

    # --- pixels <-> latents ---------------------------------------------------------------------

    def encode(self, image: torch.Tensor, latent_downsample: int | None = None, tile: int = 0,
               on_tile: Callable[[], None] | None = None) -> torch.Tensor:
        """Padded ``[B, 3, H, W]`` in 0..1 → scaled latent ``[B, 4, H/d, W/d]`` (posterior mean: deterministic).
        ``tile`` > 0: tiles of that many autoencoder pixels."""
        d = latent_downsample or self.latent_downsample
        x = image.to(self.vae.dtype) * 2 - 1
        if d == 4:
            x = F.interpolate(x.float(), scale_factor=2, mode="bicubic", align_corners=False).to(self.vae.dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        if needs_tiles(*x.shape[-2:], tile):
            latent = self.vae.encode_tiled(x, tile, tile * 3 // 4, on_tile=on_tile)
        else:
            latent = self.vae.encode(x)
        return latent * self.latent_scale

    def decode(self, latent: torch.Tensor, latent_downsample: int | None = None, tile: int = 0,
               on_tile: Callable[[], None] | None = None) -> torch.Tensor:
        """Scaled latent → ``[B, 3, h·d, w·d]`` in 0..1 (float32). ``tile``: latent pixels per tile."""
        d = latent_downsample or self.latent_downsample
        z = (latent / self.latent_scale).contiguous(memory_format=torch.channels_last)
        if needs_tiles(*z.shape[-2:], tile):
            x = self.vae.decode_tiled(z, tile, tile * 3 // 4, on_tile=on_tile)
        else:
            x = self.vae.decode(z)
        if d == 4:
            x = F.interpolate(x.float(), scale_factor=0.5, mode="bicubic", align_corners=False, antialias=True)
        return ((x.float() + 1) / 2).clamp(0, 1)

    # --- the one step ---------------------------------------------------------------------------

    def step(self, latent: torch.Tensor, timestep: torch.Tensor | float, kernels: torch.Tensor | None = None,
             tile: int = 0, on_tile: Callable[[], None] | None = None) -> torch.Tensor:
        """One deterministic step at ``timestep`` (float or ``[B]``) with optional ``k_in`` at latent size."""
        latent = latent.to(self.dtype)
        context = self.text(1).to(self.dtype)
        kernels = None if self.kcn is None or kernels is None else kernels.to(latent.device, self.dtype)

        def predict(z: torch.Tensor, k: torch.Tensor | None) -> torch.Tensor:
            control = self.kcn(z, k, torch.as_tensor(timestep, device=z.device), context) if k is not None else None
            return one_step(self.unet, self.schedule, z, timestep, context, control)

        if not needs_tiles(*latent.shape[-2:], tile):
            return predict(latent, kernels).float()

        def tile_prediction(box):
            top, bottom, left, right = box
            k = kernels[..., top:bottom, left:right] if kernels is not None else None
            return predict(latent[..., top:bottom, left:right], k)

        return tiled_prediction(tile_prediction, latent, tile, tile * 3 // 4, on_tile)


def kernel_input(kernel_map: torch.Tensor, image_size: tuple[int, int], latent_size: tuple[int, int],
                 latent_downsample: int) -> torch.Tensor:
    """``k_in`` for a latent: a kernel map ``[B, m², gh, gw]`` covering the (unpadded) image, resampled
    to the latent cells that cover the image (area average when coarser, bilinear when finer; both
    keep each kernel summing to one) and edge-replicated over the padding."""
    h = min(-(-image_size[0] // latent_downsample), latent_size[0])
    w = min(-(-image_size[1] // latent_downsample), latent_size[1])
    kmap = kernel_map.float()
    if kmap.shape[-2:] != (h, w):
        if kmap.shape[-2] >= h and kmap.shape[-1] >= w:
            kmap = F.adaptive_avg_pool2d(kmap, (h, w))
        else:
            kmap = F.interpolate(kmap, size=(h, w), mode="bilinear", align_corners=False)
    pad = (0, latent_size[1] - w, 0, latent_size[0] - h)
    return F.pad(kmap, pad, mode="replicate") if any(pad) else kmap


def match_kernel_map(kernel_map: torch.Tensor, size: int) -> torch.Tensor:
    """A kernel map ``[B, k², h, w]`` with another kernel size → ``[B, size², h, w]`` (:func:`fit_kernel_size`)."""
    k = int(round(kernel_map.shape[1] ** 0.5))
    if k == size:
        return kernel_map
    b, _, h, w = kernel_map.shape
    kernels = kernel_map.permute(0, 2, 3, 1).reshape(b, h, w, k, k)
    return fit_kernel_size(kernels, size).reshape(b, h, w, size * size).permute(0, 3, 1, 2)


def fit_kernel_size(kernels: torch.Tensor, size: int) -> torch.Tensor:
    """Per-pixel kernels ``[..., k, k]`` → ``[..., size, size]``: centre-cropped or zero-padded, then
    renormalised to sum to one (a kernel from another tool with another support)."""
    k = kernels.shape[-1]
    if k > size:
        start = (k - size) // 2
        kernels = kernels[..., start:start + size, start:start + size]
    elif k < size:
        margin = (size - k) // 2
        kernels = F.pad(kernels, (margin, margin, margin, margin))
    total = kernels.sum((-2, -1), keepdim=True)
    return kernels / total.clamp_min(1e-8)
