"""DeblurDiff's networks and one denoising step (the official ``ControlLDM.forward``).

At each step the LKPN refines the condition latent (EAC with per-pixel kernels predicted from the
condition, the noisy latent, the timestep and the text), ``cat(condition, refined)`` is the
ControlNet's hint, and the ControlNet's residuals, times the control strength, steer the SD 2.1 UNet's
noise prediction. All three attend within windows of 64 latent pixels (halved per level in the UNet
and the LKPN, fixed in the ControlNet), as the official ``SpatialTransformer`` does.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from ..sd21 import (LATENT_SCALE, AutoencoderKL, DDPMSchedule, HintControlNet, OpenCLIPTextEncoder, TextEncoderConfig,
                    UNetConfig, VAEConfig, build_unet, controlled_unet, default_tokenizer, set_attention_windows)
from ..common.parts import NamedParts
from .eac import eac
from .lkpn import LKPN

ATTENTION_WINDOW = 64  # latent pixels at the first level (official SpatialTransformer kernel_size)
PARTS = ("text_encoder", "vae", "lkpn", "controlnet", "unet")
SAMPLING_PARTS = ("lkpn", "controlnet", "unet")


@dataclass(frozen=True)
class DeblurDiffConfig:
    unet: UNetConfig
    controlnet: UNetConfig
    lkpn: UNetConfig
    vae: VAEConfig
    text_encoder: TextEncoderConfig
    latent_scale: float = LATENT_SCALE

    def to_dict(self) -> dict:
        return {name: getattr(self, name).to_dict() for name in PARTS} | {"latent_scale": self.latent_scale}

    @classmethod
    def from_dict(cls, data: dict) -> "DeblurDiffConfig":
        return cls(UNetConfig.from_dict(data["unet"]), UNetConfig.from_dict(data["controlnet"]),
                   UNetConfig.from_dict(data["lkpn"]), VAEConfig.from_dict(data["vae"]),
                   TextEncoderConfig.from_dict(data["text_encoder"]), float(data.get("latent_scale", LATENT_SCALE)))

    def problems(self) -> list[str]:
        """Ways the parts do not fit together (empty when they do)."""
        latent, text = self.vae.latent_channels, self.text_encoder.width
        found = []
        if self.unet.in_channels != latent or self.unet.out_channels != latent:
            found.append(f"the UNet maps {self.unet.in_channels}→{self.unet.out_channels} channels, the autoencoder has {latent}")
        if self.lkpn.in_channels != 2 * latent or self.lkpn.out_channels != 25 * latent:
            found.append(f"the LKPN maps {self.lkpn.in_channels}→{self.lkpn.out_channels} channels; expected {2 * latent}→{25 * latent}")
        if self.controlnet.in_channels != 3 * latent:
            found.append(f"the ControlNet takes {self.controlnet.in_channels} channels; expected {3 * latent} (noisy + condition + refined)")
        if self.controlnet.widths != self.unet.widths or self.controlnet.num_res_blocks != self.unet.num_res_blocks:
            found.append("the ControlNet's levels differ from the UNet's")
        for name in ("unet", "controlnet", "lkpn"):
            if getattr(self, name).context_dim != text:
                found.append(f"the {name} attends to {getattr(self, name).context_dim}-wide text, the text encoder gives {text}")
        return found


class DeblurDiff(NamedParts, nn.Module):
    def __init__(self, config: DeblurDiffConfig, device: torch.device | str | None = None):
        """``device='meta'`` builds the networks without memory (weights are then adopted by loading)."""
        super().__init__()
        self.config = config
        with torch.device(device) if device is not None else nullcontext():
            self.text_encoder = OpenCLIPTextEncoder(config.text_encoder)
            self.vae = AutoencoderKL(config.vae)
            self.lkpn = LKPN(config.lkpn)
            self.controlnet = HintControlNet(config.controlnet)
            self.unet = build_unet(config.unet)
        self.schedule = DDPMSchedule()
        self.tokenizer = default_tokenizer()
        self._text_cache: dict[str, torch.Tensor] = {}
        self.attention_window = None
        self.set_attention_window(ATTENTION_WINDOW)

    def set_attention_window(self, base: int | None) -> None:
        """Windowed attention as the official model (``base`` = 64), or another base, or ``None``."""
        set_attention_windows(self.unet, base, halve_per_level=True)
        set_attention_windows(self.lkpn.unet, base, halve_per_level=True)
        set_attention_windows(self.controlnet, base, halve_per_level=False)
        self.attention_window = base

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.conv_in.weight.dtype

    def part(self, name: str) -> nn.Module:
        if name not in PARTS:
            raise KeyError(name)
        return getattr(self, name)

    @torch.inference_mode()
    def encode_text(self, prompt: str) -> torch.Tensor:
        """``[1, 77, width]`` float32 text states on the text encoder's device (cached per prompt)."""
        device = self.text_encoder.positional_embedding.device
        cached = self._text_cache.get(prompt)
        if cached is None:
            tokens = self.tokenizer([prompt]).to(device)
            cached = self.text_encoder(tokens).float()
            if len(self._text_cache) > 16:
                self._text_cache.clear()
            self._text_cache[prompt] = cached.cpu()
        return cached.to(device)

    def refine(self, x: torch.Tensor, timestep: torch.Tensor, condition: torch.Tensor,
               context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """LKPN at one step: (refined condition latent, kernels), float32. EAC runs in float32."""
        dtype = self.dtype
        kernels = self.lkpn.kernels(condition.to(dtype), x.to(dtype), timestep, context.to(dtype)).float()
        return eac(condition.float(), kernels) + condition.float(), kernels

    def predict(self, x: torch.Tensor, timestep: torch.Tensor, condition: torch.Tensor, context: torch.Tensor,
                strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Noise prediction for diffusion latent ``x`` at ``timestep``: (eps, refined, kernels), float32."""
        refined, kernels = self.refine(x, timestep, condition, context)
        dtype = self.dtype
        hint = torch.cat([condition.float(), refined], dim=1).to(dtype)
        xd, cd = x.to(dtype), context.to(dtype)
        down, middle = self.controlnet(xd, hint, timestep, cd)
        control = ([d * strength for d in down], middle * strength)
        eps = controlled_unet(self.unet, xd, timestep, cd, control)
        return eps.float(), refined, kernels
