"""Stable Diffusion's DDPM schedule and the spaced ancestral sampler DiffBIR uses at inference.

The schedule: 1000 steps, betas ``linspace(√0.00085, √0.012, 1000)²`` ("linear" in LDM). The sampler
(IDDPM's respacing): keep ``steps`` evenly spread timesteps, recompute the betas between them so the
marginals are unchanged, and step from the last to the first with the posterior mean plus noise.
Coefficients are computed in float64 and used as float32, like DiffBIR's registered buffers, so the
same noise gives the same latents. Noise comes from a caller-supplied CPU generator.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

NUM_TIMESTEPS = 1000
LINEAR_START, LINEAR_END = 0.00085, 0.0120


def linear_betas(timesteps: int = NUM_TIMESTEPS, start: float = LINEAR_START, end: float = LINEAR_END) -> np.ndarray:
    return np.linspace(start ** 0.5, end ** 0.5, timesteps, dtype=np.float64) ** 2


def spaced_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """IDDPM's ``space_timesteps(num_timesteps, str(steps))``: ``steps`` indices from 0 to
    ``num_timesteps - 1``, a fractional stride accumulated and rounded (half to even) each time."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be between 1 and {num_timesteps}, got {steps}")
    stride = 1.0 if steps <= 1 else (num_timesteps - 1) / (steps - 1)
    taken, position = [], 0.0
    for _ in range(steps):
        taken.append(round(position))
        position += stride
    return sorted(set(taken))


class DDPMSchedule:
    """The training schedule, for noising (``q_sample``) with its float32 coefficients."""

    def __init__(self, betas: np.ndarray | None = None):
        self.betas = linear_betas() if betas is None else np.asarray(betas, dtype=np.float64)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)
        self.sqrt_alphas_cumprod = torch.tensor(np.sqrt(self.alphas_cumprod), dtype=torch.float32)
        self.sqrt_one_minus_alphas_cumprod = torch.tensor(np.sqrt(1.0 - self.alphas_cumprod), dtype=torch.float32)

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    def q_sample(self, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        return self.sqrt_alphas_cumprod[t].to(x0.device) * x0 + self.sqrt_one_minus_alphas_cumprod[t].to(x0.device) * noise


class SpacedSampler:
    """The reverse process over ``steps`` respaced timesteps (epsilon prediction)."""

    def __init__(self, schedule: DDPMSchedule, steps: int):
        self.timesteps = spaced_timesteps(schedule.num_timesteps, steps)
        if len(self.timesteps) != steps:
            raise ValueError(f"cannot space {schedule.num_timesteps} timesteps into {steps} distinct steps")
        betas, last = [], 1.0
        for t in self.timesteps:
            betas.append(1.0 - schedule.alphas_cumprod[t] / last)
            last = schedule.alphas_cumprod[t]
        betas = np.array(betas, dtype=np.float64)
        alphas_cumprod = np.cumprod(1.0 - betas)
        previous = np.append(1.0, alphas_cumprod[:-1])
        as32 = lambda a: torch.tensor(a, dtype=torch.float32)
        self.sqrt_recip_alphas_cumprod = as32(np.sqrt(1.0 / alphas_cumprod))
        self.sqrt_recipm1_alphas_cumprod = as32(np.sqrt(1.0 / alphas_cumprod - 1))
        self.posterior_variance = as32(betas * (1.0 - previous) / (1.0 - alphas_cumprod))
        self.posterior_mean_coef1 = as32(betas * np.sqrt(previous) / (1.0 - alphas_cumprod))
        self.posterior_mean_coef2 = as32((1.0 - previous) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod))

    def __len__(self) -> int:
        return len(self.timesteps)

    def schedule(self) -> list[tuple[int, int]]:
        """``(index, timestep)`` pairs in sampling order: from the noisiest step to step 0."""
        return [(i, self.timesteps[i]) for i in reversed(range(len(self.timesteps)))]

    def predict_x0(self, x: torch.Tensor, index: int, eps: torch.Tensor) -> torch.Tensor:
        return self.sqrt_recip_alphas_cumprod[index].to(x.device) * x - self.sqrt_recipm1_alphas_cumprod[index].to(x.device) * eps

    def step(self, x: torch.Tensor, index: int, eps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_{index}`` and the predicted noise → ``x_{index-1}`` (noise is not added at index 0)."""
        x0 = self.predict_x0(x, index, eps)
        mean = self.posterior_mean_coef1[index].to(x.device) * x0 + self.posterior_mean_coef2[index].to(x.device) * x
        if index == 0:
            return mean
        return mean + torch.sqrt(self.posterior_variance[index]).to(x.device) * noise


def guided(predict: Callable[[dict], torch.Tensor], cond: dict, uncond: dict | None, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance: ``uncond + scale · (cond − uncond)``; one call when the scale is 1."""
    if uncond is None or cfg_scale == 1.0:
        return predict(cond)
    eps_cond = predict(cond)
    eps_uncond = predict(uncond)
    return eps_uncond + cfg_scale * (eps_cond - eps_uncond)


# --- "better start": a noised low-frequency image as the starting point ------------------------

def _wavelet_blur(image: torch.Tensor, radius: int) -> torch.Tensor:
    kernel = torch.tensor([[0.0625, 0.125, 0.0625], [0.125, 0.25, 0.125], [0.0625, 0.125, 0.0625]],
                          dtype=image.dtype, device=image.device)
    channels = image.shape[1]
    kernel = kernel[None, None].repeat(channels, 1, 1, 1)
    image = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(image, kernel, groups=channels, dilation=radius)


def low_frequency(image: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """The low-frequency residual of a 5-level à-trous wavelet decomposition (dilations 1…16)."""
    for level in range(levels):
        image = _wavelet_blur(image, 2 ** level)
    return image
