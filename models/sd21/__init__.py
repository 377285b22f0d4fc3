"""Stable Diffusion 2.x building blocks shared by the SD-based methods (DeblurDiff, FideDiff, OSDD).

* :mod:`.unet` — the denoising UNet and DiffBIR's ControlNet on diffusers' classes, sizes read from
  original-layout checkpoints, optional windowed attention (DeblurDiff);
* :mod:`.convert` — original (LDM / DiffBIR) ↔ diffusers key names, both ways;
* :mod:`.vae` — the KL-f8 autoencoder with seeded posterior sampling and tiled encode/decode;
* :mod:`.text_encoder`, :mod:`.tokenizer` — OpenCLIP ViT-H text tower (penultimate layer) and its
  offline BPE tokenizer;
* :mod:`.sampler` — the DDPM schedule, DiffBIR's spaced sampler, guidance, "better start";
* :mod:`.tiles` — DiffBIR's sliding tiles with Gaussian blending;
* :mod:`.lora` — LoRA adapters (several per layer, per-sample scales, exact merge) and peft key conversion;
* :mod:`.one_step` — one deterministic step at a fractional timestep, the learnable text embedding;
* :mod:`.base` — the SD 2.x UNet and autoencoder from a single-file checkpoint, a diffusers folder or
  a method's file that holds one (the method registers its reader: DeblurDiff's model), with a
  layout-independent fingerprint;
* :mod:`.training` — training-only parts shared by the one-step methods (latent discriminator,
  edge-aware perceptual loss).

Nothing here downloads anything; diffusers is used for its model classes only.
"""
LATENT_SCALE = 0.18215  # SD 2.x: autoencoder latents × this = diffusion latents

from .unet import HEAD_CHANNELS, HintControlNet, UNetConfig, build_unet, controlled_unet, set_attention_windows, window_starts
from .convert import unet_to_diffusers, unet_to_ldm, vae_to_diffusers, vae_to_ldm
from .vae import AutoencoderKL, VAEConfig
from .text_encoder import OpenCLIPTextEncoder, TextEncoderConfig
from .tokenizer import CLIPTokenizer, default_tokenizer
from .sampler import DDPMSchedule, SpacedSampler, guided, low_frequency, spaced_timesteps
from .tiles import gaussian_weights, sliding_tiles, tiled_prediction
from .lora import (UNET_TARGETS, LoRALayer, adapter_state, inject_lora, load_adapter, merge_adapters, pack_to_peft,
                   peft_to_pack, set_scale, unwrap_lora)
from .one_step import OneStepSchedule, TextEmbedding, one_step
from .base import BaseFileReader, SDBase, base_fingerprint, is_diffusers_folder, load_base, read_base, register_base_file

__all__ = [
    "HEAD_CHANNELS", "HintControlNet", "UNetConfig", "build_unet", "controlled_unet", "set_attention_windows",
    "window_starts", "unet_to_diffusers", "unet_to_ldm", "vae_to_diffusers", "vae_to_ldm", "AutoencoderKL",
    "VAEConfig", "OpenCLIPTextEncoder", "TextEncoderConfig", "CLIPTokenizer", "default_tokenizer", "DDPMSchedule",
    "SpacedSampler", "guided", "low_frequency", "spaced_timesteps", "gaussian_weights", "sliding_tiles",
    "tiled_prediction", "LATENT_SCALE", "UNET_TARGETS", "LoRALayer", "adapter_state", "inject_lora", "load_adapter",
    "merge_adapters", "pack_to_peft", "peft_to_pack", "set_scale", "unwrap_lora", "OneStepSchedule", "TextEmbedding",
    "one_step", "SDBase", "base_fingerprint", "is_diffusers_folder", "load_base", "read_base", "BaseFileReader",
    "register_base_file",
]
