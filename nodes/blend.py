"""Blend a node's deblurred IMAGE back into its input through an optional MASK and a strength.

``out = input + strength · mask · (result − input)`` on the colour channels; an alpha channel is the
result's (the nodes already carry the input's alpha through). Masks follow ComfyUI's core nodes
(ImageCompositeMasked): ``[B, H, W]`` or ``[H, W]``, resized bilinearly to the image, a shorter batch
repeated cyclically (``comfy.utils.repeat_to_batch_size``), a longer one cut. Pure tensor maths on the
result's device (the output device: no accelerator memory is taken).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MAX_FEATHER = 256
STRENGTH_INPUT = ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                            "tooltip": "How much of the deblurred result to keep: 1 = all of it, 0 = the input unchanged, "
                                       "in between = a mix. Multiplies the mask."})
MASK_INPUT = ("MASK", {"tooltip": "Where to deblur (1) and where to keep the input (0), e.g. Blur Kernel Estimate's "
                                  "level_mask. Resized to the image; one mask serves every image of the batch."})
FEATHER_INPUT = ("INT", {"default": 0, "min": 0, "max": MAX_FEATHER, "step": 1,
                         "tooltip": "Soften the mask's edge: Gaussian blur radius in pixels (0 = the mask as given)."})
BLEND_INPUTS = {"mask": MASK_INPUT, "strength": STRENGTH_INPUT, "feather": FEATHER_INPUT}


def repeat_to_batch(tensor: torch.Tensor, batch: int) -> torch.Tensor:
    """As ``comfy.utils.repeat_to_batch_size``: cut a longer batch, repeat a shorter one cyclically."""
    if tensor.shape[0] >= batch:
        return tensor[:batch]
    return tensor.repeat(math.ceil(batch / tensor.shape[0]), *[1] * (tensor.ndim - 1))[:batch]


def feather_mask(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur (σ = radius / 2, edges replicated) of a ``[B, H, W]`` mask."""
    if radius <= 0:
        return mask
    sigma = radius / 2
    taps = torch.arange(-radius, radius + 1, dtype=mask.dtype, device=mask.device)
    kernel = torch.exp(-taps ** 2 / (2 * sigma ** 2))
    kernel = kernel / kernel.sum()
    x = mask[:, None]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))[:, 0]
    # Far from an edge the window is uniform: give its value back exactly, not off by a rounding error.
    return torch.where(x < 1e-6, 0.0, torch.where(x > 1 - 1e-6, 1.0, x))


def prepare_mask(mask, batch: int, height: int, width: int, feather: int = 0,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """A MASK → ``[batch, height, width]`` float32 in 0..1 on ``device``."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3) or mask.numel() == 0:
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask: expected a MASK [batch, height, width] or [height, width], got {shape}")
    feather = int(feather)
    if not 0 <= feather <= MAX_FEATHER:
        raise ValueError(f"feather: must be 0..{MAX_FEATHER} pixels, got {feather}")
    mask = mask.reshape(-1, mask.shape[-2], mask.shape[-1])[:batch]  # extra masks are never read
    mask = mask.to(device=device, dtype=torch.float32)
    if not torch.isfinite(mask).all():
        raise ValueError("mask: contains NaN or infinite values; check the node that produced it")
    if tuple(mask.shape[-2:]) != (height, width):
        mask = F.interpolate(mask[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    mask = feather_mask(repeat_to_batch(mask, batch).clamp(0, 1), min(feather, max(height, width)))
    return mask.clamp(0, 1)


def blend(original: torch.Tensor, result: torch.Tensor, mask=None, strength: float = 1.0, feather: int = 0) -> torch.Tensor:
    """``original + strength · mask · (result − original)`` on the colour channels of two IMAGEs
    ``[B, H, W, C]`` of the same layout (``original``'s batch repeated like a mask's); alpha is the result's.
    strength 1 without a mask returns ``result`` itself; strength 0 returns the input's colours exactly."""
    strength = float(strength)
    if not 0.0 <= strength <= 1.0:  # also rejects NaN
        raise ValueError(f"strength: must be 0..1, got {strength}")
    if mask is None and strength == 1.0:
        return result
    if original.ndim != 4 or tuple(original.shape[1:]) != tuple(result.shape[1:]):
        raise ValueError(f"image {tuple(original.shape)} and the deblurred result {tuple(result.shape)} differ in size or channels")
    b, h, w, c = result.shape
    original = repeat_to_batch(original, b).to(device=result.device, dtype=result.dtype)
    colour = 3 if c == 4 else c
    out = result.clone()
    if mask is None:
        weight = torch.full((b, h, w, 1), strength, dtype=result.dtype, device=result.device)
    else:
        weight = (prepare_mask(mask, b, h, w, feather, result.device) * strength)[..., None].to(result.dtype)
    source, target = original[..., :colour], result[..., :colour]
    mixed = source + weight * (target - source)
    # Exact ends: where the weight is 0 the input, where it is 1 the result (no rounding in between).
    mixed = torch.where(weight == 0, source, torch.where(weight == 1, target, mixed))
    out[..., :colour] = mixed.clamp(0, 1)
    return out
