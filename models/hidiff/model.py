"""HI-Diff at inference: the prior stage (``net_le_dm`` + ``net_d`` through the sampler) and the
restoration stage (``net_g``), with the official padding to a multiple of 8."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..common.colour import anchor_colours
from ..common.padding import crop_to, pad_to_multiple
from .diffusion import PriorSampler, SamplerConfig
from .latent_encoder import LatentEncoder
from .transformer import Transformer

MULTIPLE = 8  # three 2x down-samplings in net_g; the official test pads to 8


class HIDiff(nn.Module):
    """``net_le_dm`` and ``net_d`` stay float32 (they are tiny and the prior is sensitive); ``net_g``
    may be cast to half precision by :meth:`set_precision`."""

    def __init__(self, net_g: Transformer, net_le_dm: LatentEncoder, net_d: nn.Module, sampler: SamplerConfig,
                 net_le: LatentEncoder | None = None, colour_fix: float = 0.0):
        super().__init__()
        # Channels-last: depthwise and 1x1 convolutions run 2-3x faster on CPU (oneDNN) and use
        # tensor cores on CUDA; the layer norms then normalise a contiguous last dimension.
        self.net_g = net_g.to(memory_format=torch.channels_last)
        self.net_le_dm = net_le_dm
        self.net_d = net_d
        self.net_le = net_le  # stage-one encoder (sees the sharp image); only for training
        self.sampler = PriorSampler(sampler)
        # > 0: the output keeps the input's colours at this scale (px; models.common.colour). Stored
        # in the model file; the official releases have none.
        self.colour_fix = float(colour_fix)

    @property
    def prior_shape(self) -> tuple[int, int]:
        c = self.net_g.config
        return c.group * c.group, c.prior_dim

    @property
    def restore_dtype(self) -> torch.dtype:
        return self.net_g.output.weight.dtype

    def set_precision(self, dtype: torch.dtype) -> "HIDiff":
        self.net_g.to(dtype)
        return self

    def initial_noise(self, batch: int, seed: int) -> torch.Tensor:
        """The prior's starting noise from a CPU generator: the same seed gives the same result on
        every device, and matches the official test run after ``torch.manual_seed(seed)``."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        return torch.randn((batch, *self.prior_shape), generator=generator, dtype=torch.float32)

    def compute_prior(self, image: torch.Tensor, noise: torch.Tensor,
                      on_step: Callable[[int], None] | None = None) -> torch.Tensor:
        """``[B, 3, H, W]`` in 0..1 (any size) → prior ``[B, group², prior_dim]``."""
        padded, _ = pad_to_multiple(image.float(), MULTIPLE)
        return self._prior(padded, noise, on_step)

    def restore(self, image: torch.Tensor, prior: torch.Tensor, check: Callable[[], None] | None = None) -> torch.Tensor:
        """``[B, 3, H, W]`` and its prior → restored ``[B, 3, H, W]`` float32 (not clamped);
        ``check()`` runs between the transformer's blocks (to stop on Cancel)."""
        padded, size = pad_to_multiple(image.float(), MULTIPLE)
        return anchor_colours(crop_to(self._restore(padded, prior, check), size), image.float(), self.colour_fix)

    def forward(self, image: torch.Tensor, noise: torch.Tensor,
                on_step: Callable[[int], None] | None = None, check: Callable[[], None] | None = None) -> torch.Tensor:
        return self.restore(image, self.compute_prior(image, noise, on_step), check)

    def _prior(self, padded, noise, on_step):
        condition = self.net_le_dm(padded)
        return self.sampler.sample(self.net_d, condition, noise.to(condition), on_step)

    def _restore(self, padded, prior, check=None):
        dtype = self.restore_dtype
        image = padded.to(dtype).contiguous(memory_format=torch.channels_last)
        return self.net_g(image, prior.to(padded.device, dtype), check).float().contiguous()
