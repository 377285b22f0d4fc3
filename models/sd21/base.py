"""The Stable Diffusion 2.x UNet and autoencoder from the files users already have.

Three layouts are read, each without running code (safetensors, or ``torch.load(weights_only=True)``):

* a single-file original-layout checkpoint as ComfyUI keeps it in ``models/checkpoints``
  (``model.diffusion_model.`` UNet, ``first_stage_model.`` autoencoder, ``cond_stage_model.model.``
  OpenCLIP text tower), ``.safetensors`` (only the needed tensors are read) or ``.ckpt``/``.pth``;
* a diffusers folder (``unet/`` and ``vae/``, each a ``diffusion_pytorch_model[.fp16].safetensors``;
  ``scheduler/scheduler_config.json`` gives the prediction type);
* a method's own model file that holds an SD 2.x base (DeblurDiff's ``model.pth``, whose UNet and
  autoencoder are SD 2.1's): the method registers a :class:`BaseFileReader` for it, so this shared
  module never imports a method.

Sizes come from the shapes. :func:`base_fingerprint` identifies the weights independently of the
layout and of fp32/fp16 storage, so an adapter can check it is applied to the base it was trained on.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..common.checkpoint import SAFETENSORS_SUFFIXES, CheckpointError, read_state_dict
from ..common.state_dict import count_indexed, load_strict, shape_of, sub_state
from . import LATENT_SCALE
from .convert import unet_to_diffusers, vae_to_diffusers, vae_to_ldm
from .one_step import PREDICTIONS
from .text_encoder import OpenCLIPTextEncoder, TextEncoderConfig
from .unet import UNetConfig, build_unet
from .vae import AutoencoderKL, VAEConfig

SINGLE_FILE_PREFIXES = {"unet": "model.diffusion_model.", "vae": "first_stage_model.", "text_encoder": "cond_stage_model.model."}
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                     "diffusion_pytorch_model.bin")
CHECKPOINT_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")
MAX_CONFIG_BYTES = 1 << 16
# ComfyUI's rule for SD 2.x: a v-prediction UNet's last output transformer has spread-out norm biases.
V_PREDICTION_KEY = "norm1.bias"
V_PREDICTION_STD = 0.09


@dataclass
class SDBase:
    unet: nn.Module
    vae: AutoencoderKL
    unet_config: UNetConfig
    vae_config: VAEConfig
    prediction: str
    fingerprint: str
    source: str
    text_encoder: OpenCLIPTextEncoder | None = None
    latent_scale: float = LATENT_SCALE


def unet_config_from_diffusers(state: dict, source: str) -> UNetConfig:
    """UNet sizes from diffusers' key names and shapes."""
    model_channels, in_channels = shape_of(state, "conv_in.weight", source)[:2]
    levels = count_indexed(state, "down_blocks.")
    blocks = count_indexed(state, "down_blocks.0.resnets.")
    if levels == 0 or blocks == 0:
        raise CheckpointError(source, "no UNet down blocks ('down_blocks.0.resnets.0.…') found")
    widths = [shape_of(state, f"down_blocks.{i}.resnets.0.conv2.weight", source)[0] for i in range(levels)]
    if any(w % model_channels for w in widths):
        raise CheckpointError(source, f"unsupported UNet widths {widths}")
    attention = tuple(f"down_blocks.{i}.attentions.0.norm.weight" in state for i in range(levels))
    depth = [count_indexed(state, f"down_blocks.{i}.attentions.0.transformer_blocks.") if a else 0
             for i, a in enumerate(attention)]
    depth[-1] = count_indexed(state, "mid_block.attentions.0.transformer_blocks.")
    if depth[-1] == 0:
        raise CheckpointError(source, "unsupported UNet: the middle block has no cross-attention transformer")
    context = shape_of(state, "mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", source)[1]
    linear = len(shape_of(state, "mid_block.attentions.0.proj_in.weight", source)) == 2
    out_channels = shape_of(state, "conv_out.weight", source)[0]
    return UNetConfig(in_channels, out_channels, model_channels, tuple(w // model_channels for w in widths), blocks,
                      attention, tuple(depth), context, linear)


def vae_config_from_diffusers(state: dict, source: str) -> VAEConfig:
    levels, blocks = count_indexed(state, "encoder.down_blocks."), count_indexed(state, "encoder.down_blocks.0.resnets.")
    if levels == 0 or blocks == 0:
        raise CheckpointError(source, "no autoencoder encoder blocks ('encoder.down_blocks.0.resnets.0.…') found")
    return VAEConfig.from_ldm(vae_to_ldm(state, levels, blocks, source), source)


def base_fingerprint(unet_state: dict, vae_state: dict, values: int = 4096) -> str:
    """16 hex digits from every tensor's name and shape (diffusers names) and the first ``values``
    numbers, rounded to fp16, of a few tensors: the same for one model in any layout or precision."""
    digest = hashlib.sha256()
    for prefix, state in (("unet.", unet_state), ("vae.", vae_state)):
        for key in sorted(state):
            digest.update(f"{prefix}{key}:{tuple(state[key].shape)};".encode())
        for key in ("conv_in.weight", "conv_out.weight", "encoder.conv_in.weight", "decoder.conv_out.weight"):
            if key in state:
                sample = state[key].detach().reshape(-1)[:values].to("cpu", torch.float16)
                digest.update(sample.numpy().tobytes())
    return digest.hexdigest()[:16]


def _read_prefixed(path: str, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The tensors under any of ``prefixes``; from a .safetensors file only those are read."""
    if path.lower().endswith(SAFETENSORS_SUFFIXES):
        from safetensors import safe_open

        if not os.path.isfile(path):
            raise CheckpointError(path, "file not found")
        try:
            with safe_open(path, framework="pt") as handle:
                return {k: handle.get_tensor(k) for k in handle.keys() if k.startswith(prefixes)}
        except Exception as error:  # safetensors raises its own error types
            raise CheckpointError(path, f"not a readable safetensors file, truncated or corrupted ({error})") from None
    state = read_state_dict(path, mmap=True)
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def _prediction_of_single_file(unet_state: dict, config: UNetConfig) -> str:
    last = len(config.channel_mult) - 1
    if not config.attention[0]:
        return "epsilon"
    key = f"up_blocks.{last}.attentions.{config.num_res_blocks}.transformer_blocks.0.{V_PREDICTION_KEY}"
    bias = unet_state.get(key)
    if bias is not None and torch.std(bias.float(), unbiased=False) > V_PREDICTION_STD:
        return "v_prediction"
    return "epsilon"


def _read_single_file(path: str, with_text: bool) -> tuple[dict, dict, dict | None, str]:
    wanted = tuple(p for n, p in SINGLE_FILE_PREFIXES.items() if with_text or n != "text_encoder")
    state = _read_prefixed(path, wanted)
    if not any(k.startswith(SINGLE_FILE_PREFIXES["unet"]) for k in state):
        raise CheckpointError(path, "not a Stable Diffusion checkpoint: it has no 'model.diffusion_model.' (UNet) weights")
    if not any(k.startswith(SINGLE_FILE_PREFIXES["vae"]) for k in state):
        raise CheckpointError(path, "holds a UNet but no autoencoder ('first_stage_model.'); use a full checkpoint")
    unet_ldm = sub_state(state, SINGLE_FILE_PREFIXES["unet"])
    config = UNetConfig.from_ldm(unet_ldm, f"{path} [unet]")
    unet = unet_to_diffusers(unet_ldm, config, f"{path} [unet]")
    vae_ldm = sub_state(state, SINGLE_FILE_PREFIXES["vae"])
    vae_config = VAEConfig.from_ldm(vae_ldm, f"{path} [vae]")
    vae = vae_to_diffusers(vae_ldm, len(vae_config.channel_mult), vae_config.num_res_blocks, f"{path} [vae]")
    text = sub_state(state, SINGLE_FILE_PREFIXES["text_encoder"]) if with_text else None
    return unet, vae, text or None, _prediction_of_single_file(unet, config)


def _diffusers_weights(folder: str, part: str) -> str:
    for name in DIFFUSERS_WEIGHTS:
        path = os.path.join(folder, part, name)
        if os.path.isfile(path):
            return path
    raise CheckpointError(folder, f"is not a diffusers model folder: no {part}/{DIFFUSERS_WEIGHTS[0]}")


def _diffusers_prediction(folder: str) -> str:
    path = os.path.join(folder, "scheduler", "scheduler_config.json")
    if not os.path.isfile(path) or os.path.getsize(path) > MAX_CONFIG_BYTES:
        return "epsilon"
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle).get("prediction_type", "epsilon")
    except (OSError, ValueError, AttributeError):
        raise CheckpointError(path, "unreadable scheduler configuration (not a JSON object)") from None
    if value not in PREDICTIONS:
        raise CheckpointError(path, f"unsupported prediction_type {value!r} (expected one of {PREDICTIONS})")
    return value


@dataclass(frozen=True)
class BaseFileReader:
    """How to read the SD 2.x base inside a method's own model file, registered by that method."""

    name: str
    recognises: Callable[[str], bool]  # from the header; may raise CheckpointError for a broken file
    read: Callable[[str, bool], tuple[dict, dict, dict | None, str]]  # (path, with_text) → as read_base


_READERS: dict[str, BaseFileReader] = {}


def register_base_file(reader: BaseFileReader) -> None:
    _READERS[reader.name] = reader


def base_file_reader(path: str) -> BaseFileReader | None:
    """The registered reader of a method's file at ``path``, or None for any other file."""
    return next((reader for reader in _READERS.values() if reader.recognises(path)), None)


def is_diffusers_folder(path: str) -> bool:
    return os.path.isdir(path) and all(any(os.path.isfile(os.path.join(path, part, n)) for n in DIFFUSERS_WEIGHTS)
                                       for part in ("unet", "vae"))


def read_base(path: str, with_text: bool = False) -> tuple[dict, dict, dict | None, str]:
    """Diffusers-named UNet and autoencoder states, the OpenCLIP text state (single files and registered
    method files only, when asked) and the detected prediction type."""
    path = os.fspath(path)
    if os.path.isdir(path):
        unet_file, vae_file = _diffusers_weights(path, "unet"), _diffusers_weights(path, "vae")
        return read_state_dict(unet_file, mmap=True), read_state_dict(vae_file, mmap=True), None, _diffusers_prediction(path)
    reader = base_file_reader(path)
    if reader is not None:
        return reader.read(path, with_text)
    if not path.lower().endswith(CHECKPOINT_SUFFIXES):
        raise CheckpointError(path, f"not a Stable Diffusion checkpoint (expected {', '.join(CHECKPOINT_SUFFIXES)} or a diffusers folder)")
    return _read_single_file(path, with_text)


def load_base(path: str, dtype: torch.dtype = torch.float32, prediction: str = "auto", with_text: bool = False) -> SDBase:
    """Build the UNet (diffusers ``UNet2DConditionModel``) and autoencoder from ``path``, strictly,
    sizes from shapes, on the CPU in ``dtype``, without a second copy of the weights."""
    path = os.fspath(path)
    unet_state, vae_state, text_state, detected = read_base(path, with_text)
    if prediction not in ("auto",) + PREDICTIONS:
        raise ValueError(f"prediction must be 'auto' or one of {PREDICTIONS}, got {prediction!r}")
    unet_config = unet_config_from_diffusers(unet_state, f"{path} [unet]")
    vae_config = vae_config_from_diffusers(vae_state, f"{path} [vae]")
    if unet_config.in_channels != vae_config.latent_channels:
        raise CheckpointError(path, f"the UNet takes {unet_config.in_channels} channels, the autoencoder gives {vae_config.latent_channels}")
    with torch.device("meta"):
        unet, vae = build_unet(unet_config), AutoencoderKL(vae_config)
    load_strict(unet, unet_state, f"{path} [unet]", assign=True)
    load_strict(vae, vae_state, f"{path} [vae]", assign=True)
    text_encoder = None
    if text_state:
        text_config = TextEncoderConfig.from_state_dict(text_state, f"{path} [text encoder]")
        with torch.device("meta"):
            text_encoder = OpenCLIPTextEncoder(text_config)
        load_strict(text_encoder, text_state, f"{path} [text encoder]", assign=True)
        text_encoder = text_encoder.to(dtype=dtype).eval().requires_grad_(False)
    fingerprint = base_fingerprint(unet_state, vae_state)
    return SDBase(unet.to(dtype=dtype).eval().requires_grad_(False), vae.to(dtype=dtype).eval().requires_grad_(False),
                  unet_config, vae_config, detected if prediction == "auto" else prediction, fingerprint, path, text_encoder)


def is_single_file_checkpoint(path: str) -> bool:
    return os.path.isfile(path) and path.lower().endswith(CHECKPOINT_SUFFIXES)
