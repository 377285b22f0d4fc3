"""Tiny Stable Diffusion 2.x bases in the layouts users have (single-file checkpoint, diffusers
folder), from the micro DeblurDiff configuration's UNet and autoencoder, with seeded weights."""
from __future__ import annotations

import json
import os

import torch

from conftest import pack_module
from random_weights import random_state_dict
from tiny_deblurdiff import micro_config

sd21 = pack_module("models.sd21")


def tiny_states(seed: int = 0) -> tuple[dict, dict, dict]:
    """Diffusers-named UNet, autoencoder and OpenCLIP text states."""
    config = micro_config()
    with torch.device("meta"):
        unet, vae, text = sd21.build_unet(config.unet), sd21.AutoencoderKL(config.vae), sd21.OpenCLIPTextEncoder(config.text_encoder)
    shapes = {f"unet.{k}": list(v.shape) for k, v in unet.state_dict().items()}
    shapes |= {f"vae.{k}": list(v.shape) for k, v in vae.state_dict().items()}
    shapes |= {f"text.{k}": list(v.shape) for k, v in text.state_dict().items()}
    state = random_state_dict(shapes, seed)
    split = {p: {k[len(p) + 1:]: v for k, v in state.items() if k.startswith(p + ".")} for p in ("unet", "vae", "text")}
    return split["unet"], split["vae"], split["text"]


def single_file_state(seed: int = 0, with_text: bool = True) -> dict[str, torch.Tensor]:
    config = micro_config()
    unet, vae, text = tiny_states(seed)
    vae_cfg = config.vae
    state = {"model.diffusion_model." + k: v for k, v in sd21.unet_to_ldm(unet, config.unet).items()}
    state |= {"first_stage_model." + k: v.clone() for k, v in
              sd21.vae_to_ldm(vae, len(vae_cfg.channel_mult), vae_cfg.num_res_blocks).items()}
    if with_text:
        state |= {"cond_stage_model.model." + k: v for k, v in text.items()}
    return state


def write_single_file(path, seed: int = 0, dtype=torch.float32) -> str:
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    state = {k: v.to(dtype).contiguous() for k, v in single_file_state(seed).items()}
    if path.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file(state, path)
    else:
        torch.save({"state_dict": state}, path)
    return path


def write_diffusers_folder(folder, seed: int = 0, prediction: str = "epsilon") -> str:
    from safetensors.torch import save_file

    folder = os.fspath(folder)
    unet, vae, _ = tiny_states(seed)
    for part, state in (("unet", unet), ("vae", vae)):
        os.makedirs(os.path.join(folder, part), exist_ok=True)
        save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(folder, part, "diffusion_pytorch_model.safetensors"))
        with open(os.path.join(folder, part, "config.json"), "w") as handle:
            json.dump({"_class_name": "ignored: sizes come from the shapes"}, handle)
    os.makedirs(os.path.join(folder, "scheduler"), exist_ok=True)
    with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w") as handle:
        json.dump({"prediction_type": prediction}, handle)
    return folder
