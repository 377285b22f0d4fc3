"""OSDD at inference: eVAE encoder (with its LoRA) on the blurry image → latent ``z_L`` and skips; one
deterministic UNet step with the dual adapter at timestep 999 reading ``z_L`` as ``z_t`` → ``ẑ_H``; eVAE
decoder with the skips → sharp image.

Latents outside this module are the autoencoder's own (unscaled), as ComfyUI's ``LATENT`` holds them; the
step multiplies by the base's latent scale (0.18215) and divides again.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from ..common.padding import crop_to, pad_to_multiple
from ..common.parts import NamedParts
from ..sd21.base import SDBase
from ..sd21.lora import inject_lora, lora_layers
from ..sd21.one_step import OneStepSchedule, TextEmbedding, one_step
from ..sd21.tiles import tiled_prediction
from .dda import ADAPTERS, DDAGate, check_gamma, set_gamma
from .evae import EVAE, Skips

# LoRA targets inside the autoencoder's encoder (the notes' list, restricted to Encoder 1).
VAE_TARGETS = ("conv1", "conv2", "conv_in", "conv_shortcut", "conv_out", "to_q", "to_k", "to_v", "to_out.0")
VAE_ADAPTER = "osdd"
# The notes' default prompt (the OSEDiff-lineage quality sentence without tagger words); the file stores
# its learnt embedding, this text only seeds it at training when the base has a text encoder.
DEFAULT_PROMPT = "A high-resolution, 8K, ultra-realistic image with sharp focus, vibrant colors, and natural lighting"


@dataclass
class OSDDConfig:
    timestep: float = 999.0  # OSEDiff's convention: the blurry latent is read as z_999
    gate_hidden: int = 64

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "OSDDConfig":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@dataclass
class Tiling:
    tile: int = 512  # pixels
    stride: int = 256

    def latent(self, downsampling: int) -> tuple[int, int]:
        return max(self.tile // downsampling, 1), max(self.stride // downsampling, 1)


class OSDD(NamedParts, nn.Module):
    def __init__(self, base: SDBase, evae: EVAE, gate: DDAGate, text: TextEmbedding, config: OSDDConfig):
        super().__init__()
        self.unet, self.evae, self.gate, self.text = base.unet, evae, gate, text
        self.evae.to(memory_format=torch.channels_last)  # most of the CPU time is the autoencoder's convolutions
        self.config = config
        self.schedule = OneStepSchedule(base.prediction)
        self.latent_scale = base.latent_scale
        self.fingerprint = base.fingerprint
        self.base_source = base.source
        self.unet_levels = len(base.unet_config.channel_mult)

    @classmethod
    def fresh(cls, base: SDBase, config: OSDDConfig | None = None, unet_rank: int = 4, vae_rank: int = 4,
              text_init: torch.Tensor | None = None) -> "OSDD":
        """An untrained OSDD for training: zero skip blocks, zero-up LoRAs, γ gate at 0.5."""
        config = config or OSDDConfig()
        evae = EVAE(base.vae)
        if vae_rank:
            inject_lora(evae.vae.encoder, VAE_ADAPTER, vae_rank, targets=VAE_TARGETS)
        for adapter in ADAPTERS:  # both on the same layers
            inject_lora(base.unet, adapter, unet_rank)
        gate = DDAGate(evae.skips[-1].skip_conv.in_channels, config.gate_hidden)
        text = TextEmbedding(base.unet_config.context_dim, init=text_init)
        return cls(base, evae, gate, text, config).to(base.vae.dtype)

    def part(self, name: str) -> nn.Module:
        return {"evae": self.evae, "unet": self.unet, "gate": self.gate, "text": self.text}[name]

    @property
    def dtype(self) -> torch.dtype:
        return self.evae.dtype

    @property
    def pad_multiple(self) -> int:
        """Image sizes the UNet takes: the autoencoder's factor times the UNet's down-samplings."""
        return self.evae.downsampling * 2 ** (self.unet_levels - 1)

    # stages ---------------------------------------------------------------------------------
    def encode(self, image: torch.Tensor, tiling: Tiling | None = None, on_tile=None) -> tuple[torch.Tensor, Skips]:
        """``[B, 3, H, W]`` in 0..1 (H, W multiples of :attr:`pad_multiple`) → (latent, skips), the
        posterior mean (deterministic)."""
        x = (image.to(self.dtype) * 2 - 1).contiguous(memory_format=torch.channels_last)
        if tiling is None:
            return self.evae.encode_with_skips(x)
        return self.evae.encode_tiled(x, tiling.tile, tiling.stride, on_tile=on_tile)

    def gamma_from(self, skips: Skips) -> torch.Tensor:
        """The gate's γ per image, from the deepest skip feature."""
        return self.gate(skips.features[-1].to(self.gate.net[0].weight.device))

    def context(self, batch: int, context: torch.Tensor | None = None) -> torch.Tensor:
        width = self.text.embedding.shape[-1]
        if context is None:
            return self.text(batch)
        if context.ndim != 3 or context.shape[-1] != width:
            raise ValueError(f"OSDD: the conditioning is {tuple(context.shape)}, this UNet cross-attends to width {width} "
                             "(an SD 2.x text encoding [1, 77, 1024] at full size)")
        return context.expand(batch, -1, -1) if context.shape[0] == 1 else context

    def step(self, latent: torch.Tensor, gamma: float | torch.Tensor, context: torch.Tensor | None = None,
             tiling: Tiling | None = None, on_tile=None) -> torch.Tensor:
        """One step from the blurry latent to the sharp one (both unscaled), with the adapters mixed by
        γ (a number or one per image)."""
        batch = latent.shape[0]
        gamma = check_gamma(gamma, batch)
        if isinstance(gamma, torch.Tensor):
            gamma = gamma.to(latent.device)
        device = next(self.unet.parameters()).device
        z_t = (latent.float() * self.latent_scale).to(device, self.dtype)
        text = self.context(batch, None if context is None else context.to(device)).to(self.dtype)
        set_gamma(self.unet, gamma)
        t = self.config.timestep
        if tiling is None:
            x0 = one_step(self.unet, self.schedule, z_t, t, text)
        else:
            tile, stride = tiling.latent(self.evae.downsampling)
            x0 = tiled_prediction(lambda box: one_step(self.unet, self.schedule, z_t[:, :, box[0]:box[1], box[2]:box[3]], t, text),
                                  z_t, tile, stride, on_tile)
        return x0.float() / self.latent_scale

    def decode(self, latent: torch.Tensor, skips: Skips | None, tiling: Tiling | None = None, on_tile=None) -> torch.Tensor:
        """Latent (unscaled) and skips → image in 0..1 (float32)."""
        device = next(self.evae.parameters()).device
        latent = latent.to(device).contiguous(memory_format=torch.channels_last)
        skips = skips.to(device) if skips is not None else None
        if tiling is None:
            image = self.evae.decode(latent, skips)
        else:
            tile, stride = tiling.latent(self.evae.downsampling)
            image = self.evae.decode_tiled(latent, skips, tile, stride, on_tile)
        return ((image.clamp(-1, 1) + 1) / 2).float()


def deblur(model: OSDD, image: torch.Tensor, gamma: float | str, device: torch.device, tiling: Tiling | None = None,
           on_image: Callable[[], None] | None = None, check: Callable[[], None] | None = None,
           offload: torch.device | None = None) -> tuple[torch.Tensor, list[float]]:
    """``[B, 3, H, W]`` in 0..1 → sharp images and the γ used per image; ``gamma`` a number in [0, 1] or
    ``"auto"`` (the gate). Images run one at a time (memory follows one image); the UNet and the eVAE
    share the device in turn when ``offload`` is given."""
    outputs, gammas = [], []
    with torch.inference_mode():
        for i in range(image.shape[0]):
            if check:
                check()
            padded, size = pad_to_multiple(image[i:i + 1].to(device), model.pad_multiple)
            with model.parts_on(["evae", "gate"], device, offload):
                latent, skips = model.encode(padded, tiling)
                g = model.gamma_from(skips) if gamma == "auto" else torch.tensor([float(gamma)])
            if check:
                check()
            with model.parts_on(["unet", "text"], device, offload):
                sharp_latent = model.step(latent, g, tiling=tiling)
            if check:
                check()
            with model.parts_on(["evae"], device, offload):
                restored = model.decode(sharp_latent, skips, tiling)
            outputs.append(crop_to(restored, size).cpu())
            gammas.append(float(g[0]))
            if on_image:
                on_image()
    return torch.cat(outputs), gammas
