"""Deblurring whole images with DeblurDiff, as the official ``inference.py`` does.

Per image (``utils/pipeline.py`` of the official code): zero-pad bottom/right to a multiple of 64;
encode both prompts; encode the padded image (values in 0..1, not -1..1, as DeblurDiff was trained)
to the condition latent — a posterior *sample*, drawn once for the positive and once for the negative
branch (the latter even when guidance is off); start from noise, or with "better start" from the
noised latent of the image's low frequencies; run the spaced sampler with LKPN + ControlNet guidance
at every step and classifier-free guidance; decode; crop; match each colour channel's mean and
standard deviation to the input's (AdaIN colour fix).

With ``tiled`` the conditions are encoded tile by tile with the posterior *mean* (official), the noise
is predicted per latent tile and blended with Gaussian weights, and decoding is tiled likewise.

Random numbers come from one CPU generator, in the official order: condition sample, negative
condition sample, (better start: low-frequency sample, start noise) or start noise, then one noise
draw per step. Seeding it with the seed ``inference.py`` gets gives the official latents on every
device; a batch is processed image after image with the generator running on, like a folder of
images in the official loop.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..sd21 import SpacedSampler, guided, low_frequency, tiled_prediction
from .model import SAMPLING_PARTS, DeblurDiff

DEFAULT_NEGATIVE = "low quality, blurry, low-resolution, noisy, unsharp, weird textures"
PAD_MULTIPLE = 64


@dataclass
class SamplingOptions:
    steps: int = 50
    cfg_scale: float = 1.0
    strength: float = 1.0  # ControlNet strength (official control_scales)
    positive: str = ""
    negative: str = DEFAULT_NEGATIVE
    better_start: bool = False
    tiled: bool = False
    tile_size: int = 512  # pixels
    tile_stride: int = 256

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.tiled and (self.tile_size < 64 or self.tile_size % 8 or self.tile_stride < 8 or self.tile_stride % 8
                           or self.tile_stride > self.tile_size):
            raise ValueError(f"tiles: size {self.tile_size} and stride {self.tile_stride} must be multiples of 8, "
                             "size >= 64 and 8 <= stride <= size")


def pad_to_multiple(image: torch.Tensor, multiple: int = PAD_MULTIPLE) -> torch.Tensor:
    """Zero padding at the bottom and right (the official ``pad_to_multiples_of``)."""
    h, w = image.shape[-2:]
    return F.pad(image, (0, (-w) % multiple, 0, (-h) % multiple), mode="constant", value=0.0)


def color_fix(sample: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """AdaIN: each channel of ``sample`` takes the mean and (unbiased) standard deviation of ``reference``'s."""
    def stats(x):
        flat = x.reshape(x.shape[0], x.shape[1], -1)
        return flat.mean(2)[..., None, None], (flat.var(2) + eps).sqrt()[..., None, None]

    mean_s, std_s = stats(sample)
    mean_r, std_r = stats(reference)
    return (sample - mean_s) / std_s * std_r + mean_r


def _noise(shape, generator: torch.Generator, device) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32).to(device)


def steps_per_image(options: SamplingOptions) -> int:
    """Progress units per image: the sampling steps plus encoding and decoding."""
    return options.steps + 2


@torch.inference_mode()
def encode_texts(model: DeblurDiff, options: SamplingOptions) -> tuple[torch.Tensor, torch.Tensor | None]:
    negative = model.encode_text(options.negative) if options.cfg_scale != 1.0 else None
    return model.encode_text(options.positive), negative


@torch.inference_mode()
def encode_conditions(model: DeblurDiff, padded: torch.Tensor, options: SamplingOptions,
                      generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(condition latent, negative-branch condition latent or None without guidance, start latent),
    in diffusion scale (× 0.18215), drawing from ``generator`` in the official order."""
    vae, scale = model.vae, model.config.latent_scale
    if options.tiled:
        condition = vae.encode_tiled(padded, options.tile_size, options.tile_stride) * scale
        negative = condition if options.cfg_scale != 1.0 else None
    else:
        condition = vae.encode(padded, generator) * scale
        if options.cfg_scale != 1.0:
            negative = vae.encode(padded, generator) * scale
        else:
            negative = None
            torch.randn(tuple(condition.shape), generator=generator)  # the unused negative sample's draw
    if options.better_start:
        low = low_frequency(padded)
        if options.tiled:
            x0 = vae.encode_tiled(low, options.tile_size, options.tile_stride, generator) * scale
        else:
            x0 = vae.encode(low, generator) * scale
        start = model.schedule.q_sample(x0, model.schedule.num_timesteps - 1, _noise(x0.shape, generator, x0.device))
    else:
        start = _noise(condition.shape, generator, condition.device)
    return condition, negative, start


@torch.inference_mode()
def sample(model: DeblurDiff, start: torch.Tensor, condition: torch.Tensor, negative: torch.Tensor | None,
           text: torch.Tensor, negative_text: torch.Tensor | None, options: SamplingOptions,
           generator: torch.Generator, on_step: Callable[[], None] | None = None) -> torch.Tensor:
    """The spaced reverse process from ``start`` to the clean latent (diffusion scale, float32)."""
    sampler = SpacedSampler(model.schedule, options.steps)
    cond = {"c_img": condition, "c_txt": text}
    uncond = {"c_img": negative, "c_txt": negative_text} if negative is not None else None
    x = start.float()
    for index, timestep in sampler.schedule():
        t = torch.tensor([timestep], dtype=torch.long, device=x.device)

        def predict(c, box=None):
            image = c["c_img"] if box is None else c["c_img"][:, :, box[0]:box[1], box[2]:box[3]]
            latent = x if box is None else x[:, :, box[0]:box[1], box[2]:box[3]]
            return model.predict(latent, t, image, c["c_txt"], options.strength)[0]

        if options.tiled:
            eps = tiled_prediction(lambda box: guided(lambda c: predict(c, box), cond, uncond, options.cfg_scale),
                                   x, options.tile_size // 8, options.tile_stride // 8)
        else:
            eps = guided(predict, cond, uncond, options.cfg_scale)
        x = sampler.step(x, index, eps, _noise(x.shape, generator, x.device))
        if on_step:
            on_step()
    return x


@torch.inference_mode()
def decode(model: DeblurDiff, latent: torch.Tensor, options: SamplingOptions) -> torch.Tensor:
    """Diffusion latent → image in -1..1 (float32, padded size)."""
    z = latent / model.config.latent_scale
    if options.tiled:
        return model.vae.decode_tiled(z, options.tile_size // 8, options.tile_stride // 8)
    return model.vae.decode(z)


def finish(decoded: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Crop to the input's size, map -1..1 to 0..1 and fix the colours against the input (not clamped)."""
    h, w = reference.shape[-2:]
    return color_fix((decoded[:, :, :h, :w] + 1) / 2, reference)


@torch.inference_mode()
def deblur(model: DeblurDiff, images: torch.Tensor, options: SamplingOptions, seed: int,
           device: torch.device | str = "cpu", on_step: Callable[[], None] | None = None,
           offload: torch.device | None = None, keep_latents: bool = False):
    """``[B, 3, H, W]`` in 0..1 → deblurred ``[B, 3, H, W]`` (float32, not clamped; 8-bit output as the
    official is ``(x * 255).clamp(0, 255)`` truncated). With ``keep_latents`` also returns the final
    diffusion latents. Parts move to ``device`` for their stage and, with ``offload``, the text encoder
    leaves right after encoding and the samplers' networks after the last image."""
    options.validate()
    device = torch.device(device)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    with model.parts_on(["text_encoder"], device, offload):
        text, negative_text = encode_texts(model, options)
    outputs, latents = [], []
    with model.parts_on(["vae", *SAMPLING_PARTS], device, offload):
        for i in range(images.shape[0]):
            image = images[i:i + 1].to(device=device, dtype=torch.float32)
            padded = pad_to_multiple(image)
            condition, negative, start = encode_conditions(model, padded, options, generator)
            if on_step:
                on_step()
            latent = sample(model, start, condition, negative, text, negative_text, options, generator, on_step)
            outputs.append(finish(decode(model, latent, options), image))
            latents.append(latent)
            if on_step:
                on_step()
    result = torch.cat(outputs)
    return (result, torch.cat(latents)) if keep_latents else result
