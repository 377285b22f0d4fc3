"""The prior diffusion of HI-Diff: a handful of reverse steps over the ``[B, group², C]`` prior.

The official code has two samplers and each release uses one:

* ``local`` (GoPro, ``HI_Diff_S2.p_sample_loop``): betas ``linspace(0.1, 0.99, 8)``, the denoiser
  predicts noise, x0 is clipped to [-1, 1], the step index fed to the denoiser is ``t + 1``.
* ``ldm`` (RealBlur, ``ldm.ddpm.DDPM``): betas ``linspace(√0.1, √0.99, 16)²``, the denoiser predicts
  x0 directly without clipping, the step index fed is ``t``.

Both return the posterior mean without adding variance, as the official test does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from typing import Callable

import numpy as np
import torch
from torch import nn


MAX_TIMESTEPS = 1000  # the releases use 8 and 16; beyond this a file would only cost time and memory
SCHEDULES = ("linear", "sqrt_linear")
PREDICTIONS = ("eps", "x0")


@dataclass(frozen=True)
class SamplerConfig:
    timesteps: int = 8
    schedule: str = "linear"  # "linear" or "sqrt_linear"
    linear_start: float = 0.1
    linear_end: float = 0.99
    prediction: str = "eps"  # "eps" or "x0"
    clip_x0: bool = True
    time_offset: int = 1

    @classmethod
    def local(cls, timesteps: int = 8) -> "SamplerConfig":
        return cls(timesteps, "linear", 0.1, 0.99, "eps", True, 1)

    @classmethod
    def ldm(cls, timesteps: int = 16) -> "SamplerConfig":
        return cls(timesteps, "sqrt_linear", 0.1, 0.99, "x0", False, 0)

    def to_dict(self) -> dict:
        return asdict(self)

    def problems(self) -> list[str]:
        """What makes this configuration unusable (values from a file's metadata are checked here)."""
        def whole(value, low, high):
            return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

        def fraction(value):
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and 0 < value < 1

        found = []
        if not whole(self.timesteps, 1, MAX_TIMESTEPS):
            found.append(f"timesteps is {self.timesteps!r}; expected a whole number from 1 to {MAX_TIMESTEPS}")
        if self.schedule not in SCHEDULES:
            found.append(f"schedule is {self.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        for name in ("linear_start", "linear_end"):
            if not fraction(getattr(self, name)):
                found.append(f"{name} is {getattr(self, name)!r}; expected a number between 0 and 1")
        if self.prediction not in PREDICTIONS:
            found.append(f"prediction is {self.prediction!r}; expected one of {', '.join(PREDICTIONS)}")
        if not isinstance(self.clip_x0, bool):
            found.append(f"clip_x0 is {self.clip_x0!r}; expected true or false")
        if not whole(self.time_offset, 0, MAX_TIMESTEPS):
            found.append(f"time_offset is {self.time_offset!r}; expected a whole number from 0 to {MAX_TIMESTEPS}")
        return found

    def betas(self) -> np.ndarray:
        if self.schedule == "linear":
            return np.linspace(self.linear_start, self.linear_end, self.timesteps, dtype=np.float64)
        if self.schedule == "sqrt_linear":
            return np.linspace(self.linear_start ** 0.5, self.linear_end ** 0.5, self.timesteps, dtype=np.float64) ** 2
        raise ValueError(f"unknown beta schedule {self.schedule!r}")


class PriorSampler(nn.Module):
    """Schedule buffers (float64 maths, stored as float32 like the official ones) and the reverse loop."""

    def __init__(self, config: SamplerConfig):
        super().__init__()
        self.config = config
        betas = config.betas()
        alphas_cumprod = np.cumprod(1.0 - betas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        buffers = {
            "alphas_cumprod": alphas_cumprod,
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / alphas_cumprod - 1),
            "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
        }
        for name, value in buffers.items():
            self.register_buffer(name, torch.tensor(value, dtype=torch.float32), persistent=False)

    def step(self, denoiser: nn.Module, x: torch.Tensor, condition: torch.Tensor, t: int) -> torch.Tensor:
        """One reverse step from ``x_t`` to the posterior mean of ``x_{t-1}``."""
        c = self.config
        time = torch.full(x.shape[:2], t + c.time_offset, device=x.device, dtype=torch.long)
        out = denoiser(x, condition, time)
        if c.prediction == "eps":
            x0 = self.sqrt_recip_alphas_cumprod[t] * x - self.sqrt_recipm1_alphas_cumprod[t] * out
        else:
            x0 = out
        if c.clip_x0:
            x0 = x0.clamp(-1.0, 1.0)
        return self.posterior_mean_coef1[t] * x0 + self.posterior_mean_coef2[t] * x

    def sample(self, denoiser: nn.Module, condition: torch.Tensor, noise: torch.Tensor,
               on_step: Callable[[int], None] | None = None) -> torch.Tensor:
        x = noise
        for t in reversed(range(self.config.timesteps)):
            x = self.step(denoiser, x, condition, t)
            if on_step:
                on_step(t)
        return x

    def q_sample(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward diffusion to the last step, as stage-two training does.

        The official ``local`` trainer passes ``alphas_cumprod`` where its ``q_sample`` expects the
        square root, so it noises with ``a·x0 + sqrt(1 - a²)·ε``; the ``ldm`` one uses ``√a·x0 + √(1-a)·ε``.
        Both are kept, so weights trained here match what the released ones saw.
        """
        a = self.alphas_cumprod[self.config.timesteps - 1]
        if self.config.prediction == "eps":
            return a * x0 + (1 - a * a).sqrt() * noise
        return a.sqrt() * x0 + (1 - a).sqrt() * noise
