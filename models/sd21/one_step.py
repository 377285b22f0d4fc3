"""One deterministic diffusion step from a degraded latent to a clean one (FideDiff, OSDD).

The degraded latent is read as a point ``z_t`` of the SD 2.1 training schedule at a (possibly
fractional) timestep ``t``; the UNet's output is read as ε (or v for 768-v bases) and turned into
``ẑ0`` with the schedule's ᾱ at ``t``, linearly interpolated between the integer timesteps. No noise
is added and there is no guidance, so the step is a plain function of its inputs.
"""
from __future__ import annotations

import torch
from torch import nn

from .sampler import DDPMSchedule

PREDICTIONS = ("epsilon", "v_prediction")
TEXT_TOKENS = 77


class OneStepSchedule:
    """ᾱ at fractional timesteps, and the ε / v → x0 formulas."""

    def __init__(self, prediction: str = "epsilon", schedule: DDPMSchedule | None = None):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
        schedule = schedule or DDPMSchedule()
        self.prediction = prediction
        self.alphas_cumprod = torch.tensor(schedule.alphas_cumprod, dtype=torch.float64)

    @property
    def num_timesteps(self) -> int:
        return len(self.alphas_cumprod)

    def alpha_bar(self, t: torch.Tensor | float) -> torch.Tensor:
        """ᾱ at ``t`` (clamped to [0, T-1]), linear between integer steps; float64, t's shape."""
        t = torch.as_tensor(t, dtype=torch.float64).clamp(0, self.num_timesteps - 1)
        low = t.floor().long()
        high = (low + 1).clamp(max=self.num_timesteps - 1)
        frac = t - low.double()
        table = self.alphas_cumprod.to(t.device)
        return table[low] * (1 - frac) + table[high] * frac

    def _coefficients(self, t, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self.alpha_bar(torch.as_tensor(t, device=like.device))
        if a.dim() == 0:
            a = a.expand(like.shape[0])
        a = a.view(-1, *([1] * (like.dim() - 1)))
        return a.sqrt().to(like.dtype), (1 - a).sqrt().to(like.dtype)

    def predict_x0(self, z_t: torch.Tensor, output: torch.Tensor, t) -> torch.Tensor:
        """ε: ``(z_t − √(1−ᾱ) ε̂) / √ᾱ``; v: ``√ᾱ z_t − √(1−ᾱ) v̂``."""
        sqrt_a, sqrt_1ma = self._coefficients(t, z_t)
        if self.prediction == "epsilon":
            return (z_t - sqrt_1ma * output) / sqrt_a
        return sqrt_a * z_t - sqrt_1ma * output

    def noised(self, z0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        """``√ᾱ z0 + √(1−ᾱ) ε`` at a fractional ``t`` (training: put a clean latent on the schedule)."""
        sqrt_a, sqrt_1ma = self._coefficients(t, z0)
        return sqrt_a * z0 + sqrt_1ma * eps


def one_step(unet: nn.Module, schedule: OneStepSchedule, z_t: torch.Tensor, t, context: torch.Tensor,
             control: tuple[list[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """ẑ0 from one UNet evaluation at timestep ``t`` (float or per-sample ``(B,)``), with optional
    ControlNet residuals. ``context`` is broadcast over the batch."""
    batch = z_t.shape[0]
    timestep = torch.as_tensor(t, dtype=torch.float32, device=z_t.device)
    timestep = timestep.expand(batch) if timestep.dim() == 0 else timestep
    if context.shape[0] != batch:
        context = context.expand(batch, -1, -1)
    down, middle = control if control is not None else (None, None)
    output = unet(z_t, timestep, encoder_hidden_states=context.to(z_t.dtype),
                  down_block_additional_residuals=tuple(down) if down is not None else None,
                  mid_block_additional_residual=middle, return_dict=False)[0]
    return schedule.predict_x0(z_t, output, timestep)


class TextEmbedding(nn.Module):
    """A learnable prompt embedding ``(1, 77, width)`` that replaces the text encoder (FideDiff's "LE").
    Initialise it from the text encoder's output for ``""`` when one is at hand, else zeros."""

    def __init__(self, width: int = 1024, tokens: int = TEXT_TOKENS, init: torch.Tensor | None = None):
        super().__init__()
        value = torch.zeros(1, tokens, width) if init is None else init.detach().float().reshape(1, tokens, width).clone()
        self.embedding = nn.Parameter(value)

    def forward(self, batch: int = 1) -> torch.Tensor:
        return self.embedding.expand(batch, -1, -1)
