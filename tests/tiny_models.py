"""Tiny random HI-Diff checkpoints in the official release layout, for tests and the host harness.

Sizes are a reduced version of the GoPro architecture, built with the pack's own classes and saved
as the release does: ``{'params': state_dict}`` in ``net_g.pth``, ``net_le_dm.pth``, ``net_d.pth``.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

# Where deblur_then_upscale's UpscaleModelLoader points: the name of Real-ESRGAN's official compact
# (SRVGGNetCompact) x4 release, so the bundled workflow finds the file users download.
UPSCALE_MODEL = "realesr-general-x4v3.pth"


def tiny_hidiff_states(seed: int = 0, realblur: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    from conftest import pack_module

    hd = pack_module("models.hidiff")
    torch.manual_seed(seed)
    activation = "lrelu" if realblur else "gelu"
    net_g = hd.Transformer(hd.TransformerConfig.standard(
        dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4), embed_dim=8, group=4,
        ffn_expansion_factor=2 if realblur else 2.66))
    net_le_dm = hd.LatentEncoder(hd.LatentEncoderConfig.standard(in_channels=3, embed_dim=8, block_num=1, activation=activation))
    if realblur:
        net_d = hd.SimpleDenoiser(32, 2)
    else:
        net_d = hd.MixerDenoiser.standard(channels=32, inner=16, block_num=4, group=4)
    return {"net_g": net_g.state_dict(), "net_le_dm": net_le_dm.state_dict(), "net_d": net_d.state_dict()}


def write_official_layout(folder: str | os.PathLike, states: dict[str, dict]) -> str:
    os.makedirs(folder, exist_ok=True)
    for part, state in states.items():
        torch.save({"params": state}, os.path.join(folder, f"{part}.pth"))
    return os.fspath(folder)


def tiny_compact_upscaler_state(scale: int = 4, features: int = 8, convs: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """A small Real-ESRGAN compact (SRVGGNetCompact) state dict: ``body`` alternates 3x3 convolutions
    and PReLUs, the last convolution emits ``3 * scale**2`` channels for a pixel shuffle. Spandrel
    (ComfyUI's upscale-model loader) recognises it by these keys and reads the sizes from the shapes."""
    generator = torch.Generator().manual_seed(seed)
    widths = [3] + [features] * (convs + 1) + [3 * scale * scale]
    state, index = {}, 0
    for layer, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        state[f"body.{index}.weight"] = torch.randn(c_out, c_in, 3, 3, generator=generator) * (0.3 / c_in ** 0.5)
        state[f"body.{index}.bias"] = torch.randn(c_out, generator=generator) * 0.01
        index += 1
        if layer < len(widths) - 2:
            state[f"body.{index}.weight"] = torch.full((c_out,), 0.25)  # PReLU slopes
            index += 1
    return state


def compact_upscale(state: dict[str, torch.Tensor], image: torch.Tensor) -> torch.Tensor:
    """What ComfyUI's ImageUpscaleWithModel computes with a compact model on an image smaller than its
    512 px tile: the network's pixel-shuffled residual over a nearest upscale, clamped. IMAGE in and out."""
    x = image.movedim(-1, 1).float()
    features, index = x, 0
    while f"body.{index}.weight" in state:
        weight = state[f"body.{index}.weight"]
        features = F.conv2d(features, weight, state[f"body.{index}.bias"], padding=1) if weight.ndim == 4 else F.prelu(features, weight)
        index += 1
    scale = int(round((features.shape[1] // x.shape[1]) ** 0.5))
    out = F.pixel_shuffle(features, scale) + F.interpolate(x, scale_factor=scale, mode="nearest")
    return out.clamp(0, 1).movedim(1, -1)


def prepare_models(models_dir: str | os.PathLike) -> None:
    """Write a tiny model wherever a bundled workflow's loader points (host harness hook)."""
    deblur = os.path.join(models_dir, "deblur")
    write_official_layout(os.path.join(deblur, "HI_Diff_GoPro"), tiny_hidiff_states(0))
    upscale_models = os.path.join(models_dir, "upscale_models")
    os.makedirs(upscale_models, exist_ok=True)
    # The official release's layout: {"params": state_dict} in a .pth.
    torch.save({"params": tiny_compact_upscaler_state()}, os.path.join(upscale_models, UPSCALE_MODEL))
    # DeblurDiff: the official single-file layout at the bundled workflows' path (tests/tiny_deblurdiff.py)
    from tiny_deblurdiff import micro_state, write_model

    write_model(os.path.join(deblur, "DeblurDiff", "model.pth"), micro_state(0))
    # FideDiff: a tiny SD 2.1 base where ComfyUI keeps checkpoints, and an adapter made for it
    from tiny_fidediff import write_adapter
    from tiny_sd import write_single_file

    base = write_single_file(os.path.join(models_dir, "checkpoints", "v2-1_512-ema-pruned.safetensors"))
    write_adapter(os.path.join(deblur, "FideDiff", "fidediff_sd21_d4.safetensors"), base, 4)
    # OSDD: weights trained "on" the same tiny base
    from tiny_osdd import write_tiny_osdd

    write_tiny_osdd(os.path.join(deblur, "OSDD", "osdd.safetensors"), base)
