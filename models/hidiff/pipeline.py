"""Deblurring whole images with HI-Diff: batches one image at a time, optional tiles, seeded noise.

With tiling off this is exactly the official test procedure (the batch's noise is drawn in one go,
as ``torch.randn_like`` does there). With tiling on, each tile gets its own prior, as the model saw
crops in training, and draws its noise from the same seeded CPU generator in tile order.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..common.tiling import tile_count, tiled_apply
from .model import HIDiff


def steps_per_image(model: HIDiff, height: int, width: int, tile: int = 0, overlap: int = 32) -> int:
    """Progress units for one image: each prior step plus the restoration, per tile."""
    tiles = tile_count(height, width, tile, overlap) if tile else 1
    return tiles * (model.sampler.config.timesteps + 1)


def _tile_fn(model: HIDiff, generator: torch.Generator, on_step: Callable[[], None] | None,
             check: Callable[[], None] | None):
    def run(tile: torch.Tensor) -> torch.Tensor:
        noise = torch.randn((1, *model.prior_shape), generator=generator)
        return deblur_one(model, tile, noise, on_step, check)
    return run


def deblur_one(model: HIDiff, image: torch.Tensor, noise: torch.Tensor,
               on_step: Callable[[], None] | None = None, check: Callable[[], None] | None = None) -> torch.Tensor:
    step = (lambda _t: on_step()) if on_step else None
    out = model(image, noise, step, check)
    if on_step:
        on_step()
    return out


@torch.inference_mode()
def deblur(model: HIDiff, images: torch.Tensor, seed: int, tile: int = 0, overlap: int = 32,
           on_step: Callable[[], None] | None = None, check: Callable[[], None] | None = None) -> torch.Tensor:
    """``[B, 3, H, W]`` in 0..1 → restored ``[B, 3, H, W]`` float32 (not clamped), on the images' device.
    ``on_step()`` after each prior step and restoration (progress); ``check()`` between the
    restoration's blocks too (Cancel on a whole large image)."""
    batch = images.shape[0]
    h, w = images.shape[-2:]
    outputs = []
    if tile and (h > tile or w > tile):
        generator = torch.Generator(device="cpu").manual_seed(seed)
        run = _tile_fn(model, generator, on_step, check)
        for i in range(batch):
            outputs.append(tiled_apply(images[i:i + 1], run, tile, overlap))
    else:
        noise = model.initial_noise(batch, seed)
        for i in range(batch):
            outputs.append(deblur_one(model, images[i:i + 1], noise[i:i + 1], on_step, check))
    return torch.cat(outputs)


@torch.inference_mode()
def compute_priors(model: HIDiff, images: torch.Tensor, seed: int,
                   on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """The prior of each image (noise for the whole batch drawn at once, as in :func:`deblur`)."""
    noise = model.initial_noise(images.shape[0], seed)
    step = (lambda _t: on_step()) if on_step else None
    return torch.cat([model.compute_prior(images[i:i + 1], noise[i:i + 1], step) for i in range(images.shape[0])])


@torch.inference_mode()
def restore_with_priors(model: HIDiff, images: torch.Tensor, priors: torch.Tensor,
                        on_step: Callable[[], None] | None = None, check: Callable[[], None] | None = None) -> torch.Tensor:
    outputs = []
    for i in range(images.shape[0]):
        outputs.append(model.restore(images[i:i + 1], priors[i:i + 1], check))
        if on_step:
            on_step()
    return torch.cat(outputs)
