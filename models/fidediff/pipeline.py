"""Deblurring whole images with FideDiff: pad, estimate kernels and blur level, encode, one step,
decode, crop. Each image of a batch goes through alone (memory follows one image, or one tile)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..common.padding import crop_to, pad_to_multiple
from .model import DEFAULT_TIMESTEP, MAX_TIMESTEP, FideDiff, kernel_input, match_kernel_map

STAGES = 4  # estimate, encode, step, decode: progress units per image


@dataclass
class DeblurOptions:
    latent_downsample: int = 0  # 0: the adapter's
    timestep: float = -1.0  # < 0: the estimated blur level (or DEFAULT_TIMESTEP without an estimator)
    use_kernels: bool = True  # feed the estimated kernels to the Kernel ControlNet
    latent_tile: int = 128  # UNet tiles in latent pixels (0: never tile)
    vae_tile: int = 1024  # autoencoder tiles in its pixels (0: never tile)

    def validate(self) -> None:
        if self.latent_downsample not in (0, 4, 8):
            raise ValueError(f"latent_downsample must be 4 or 8, got {self.latent_downsample}")
        if self.timestep > MAX_TIMESTEP:
            raise ValueError(f"timestep must be at most {MAX_TIMESTEP:g}, got {self.timestep}")
        if self.latent_tile and self.latent_tile < 16 or self.vae_tile and self.vae_tile < 128:
            raise ValueError("tiles: at least 16 latent pixels for the UNet and 128 pixels for the autoencoder")


def resolve_timestep(requested: float, estimated: torch.Tensor | None, batch: int) -> torch.Tensor:
    """The step's timestep per image: the user's when ≥ 0, else the estimate, else the default."""
    if requested >= 0:
        return torch.full((batch,), float(requested))
    if estimated is not None:
        return estimated.detach().float().cpu().clamp(0, MAX_TIMESTEP).reshape(batch)
    return torch.full((batch,), DEFAULT_TIMESTEP)


def deblur(model: FideDiff, image: torch.Tensor, options: DeblurOptions | None = None,
           on_step: Callable[[], None] | None = None) -> tuple[torch.Tensor, dict]:
    """``[B, 3, H, W]`` in 0..1 → the deblurred images and ``{"timestep": [...], "level": [...]}``."""
    options = options or DeblurOptions()
    options.validate()
    d = options.latent_downsample or model.latent_downsample
    device = model.unet.conv_in.weight.device
    tick = on_step or (lambda: None)
    outputs, timesteps, levels = [], [], []
    for single in image.split(1):
        padded, size = pad_to_multiple(single.to(device, torch.float32), model.pad_multiple(d))
        kernels, level = None, None
        if model.estimator is not None and (options.timestep < 0 or (options.use_kernels and model.kcn is not None)):
            with torch.no_grad():
                estimate = model.estimator.estimate(single.to(device, next(model.estimator.parameters()).dtype))
            level = estimate.level
            if options.use_kernels and model.kcn is not None:
                kernels = match_kernel_map(estimate.kernel_map, math.isqrt(model.kcn.kernel_channels))
        tick()
        latent = model.encode(padded, d, tile=options.vae_tile)
        tick()
        t = resolve_timestep(options.timestep, level, 1).to(device)
        k_in = kernel_input(kernels, size, latent.shape[-2:], d) if kernels is not None else None
        clean = model.step(latent, t, k_in, tile=options.latent_tile)
        tick()
        out = model.decode(clean, d, tile=options.vae_tile // 8 if options.vae_tile else 0)
        tick()
        outputs.append(crop_to(out, size))
        timesteps.append(float(t[0]))
        levels.append(None if level is None else float(level.reshape(-1)[0]))
    return torch.cat(outputs), {"timestep": timesteps, "level": levels}
