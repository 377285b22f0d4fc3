"""DeblurDiff nodes: loader, the one-node sampler, and the stages (encode, one LKPN step, decode).

``LATENT`` values carry the autoencoder's latents as ComfyUI does (``{"samples": [B, 4, H/8, W/8]}``);
the diffusion works on them × 0.18215. ``DeblurDiffEncode`` adds ``deblurdiff_size`` (the image size
before padding) so ``DeblurDiffDecode`` can crop.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..models import methods
from ..models.common import memory
from ..models.deblurdiff import (DEFAULT_NEGATIVE, PARTS, DeblurDiff, SamplingOptions, deblur, load_deblurdiff,
                                 steps_per_image)
from ..models.deblurdiff.kernels import blur_kernel_maps, preview
from ..models.deblurdiff.pipeline import decode, encode_conditions, finish, pad_to_multiple
from . import host
from .blend import BLEND_INPUTS, blend
from .images import join_image, split_image

log = logging.getLogger(__name__)

CATEGORY = "deblur/DeblurDiff"
NO_MODEL = "(no DeblurDiff model found: see README, weights)"
SIZE_KEY = "deblurdiff_size"
# Rough peak activation bytes per image pixel while sampling in fp32 (three UNets, windowed attention).
ACTIVATION_BYTES_PER_PIXEL = 12_000
SEED = ("INT", {"default": 231, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                "tooltip": "Seed of the noise (drawn on the CPU, so the same seed gives the same result on every device). The official inference.py uses 231."})
TILE_INPUTS = {
    "tiled": ("BOOLEAN", {"default": False, "tooltip": "Work in overlapping tiles (official --tiled): memory follows the tile, not the image. Needed for large images on small GPUs."}),
    "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64, "tooltip": "Tile side in pixels (official --tile_size)."}),
    "tile_stride": ("INT", {"default": 256, "min": 8, "max": 4096, "step": 8, "tooltip": "Distance between tiles in pixels (official --tile_stride); smaller = more overlap, smoother, slower."}),
}


@dataclass
class DeblurDiffHandle:
    """What flows along a DEBLURDIFF_MODEL link."""
    model: DeblurDiff
    name: str
    dtype: torch.dtype

    def bytes_for(self, parts, height: int, width: int) -> int:
        weights = sum(host.module_bytes(self.model.part(p)) for p in parts)
        return weights + ACTIVATION_BYTES_PER_PIXEL * torch.finfo(self.dtype).bits // 32 * height * width


def list_models() -> list[str]:
    return methods.list_models(methods.DEBLURDIFF) or [NO_MODEL]


def _prepare(handle: DeblurDiffHandle, parts, height: int, width: int) -> torch.device:
    device = host.torch_device()
    host.free_memory(handle.bytes_for(parts, height, width), device)
    return device


def _offload(handle: DeblurDiffHandle) -> None:
    handle.model.to(host.offload_device())
    host.soft_empty_cache()


def _latent(samples: torch.Tensor, size=None) -> dict:
    out = {"samples": samples.float().cpu()}
    if size is not None:
        out[SIZE_KEY] = [int(size[0]), int(size[1])]
    return out


def _check_latent(value, name: str, channels: int) -> torch.Tensor:
    samples = value.get("samples") if isinstance(value, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or samples.shape[1] != channels:
        got = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name}: expected a LATENT with {channels} channels ([batch, {channels}, h, w]), got {got}")
    return samples


class DeblurDiffLoader:
    DESCRIPTION = ("Loads DeblurDiff (SD 2.1 + ControlNet + LKPN, ~1.7 B parameters) from models/deblur/: the official "
                   "model.pth, or a .safetensors made by tools/convert_deblurdiff.py (loads faster).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (list_models(), {"tooltip": "The official release's model.pth (put it at models/deblur/DeblurDiff/model.pth) or a converted .safetensors."}),
            "precision": (list(host.PRECISIONS), {"default": "auto", "tooltip": "auto = fp16 on CUDA and Apple GPUs, fp32 on the CPU. fp32 reproduces the official results exactly; fp16/bf16 halve memory and run faster on GPUs."}),
        }}

    RETURN_TYPES = ("DEBLURDIFF_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded DeblurDiff model (text encoder, autoencoder, LKPN, ControlNet, UNet).",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, model_name, precision="auto"):
        if model_name == NO_MODEL:
            raise FileNotFoundError(f"No DeblurDiff model in {host.model_dirs() or 'models/deblur'}: download the official "
                                    "model.pth (GitHub kkkls/DeblurDiff, 'checkpoint') into models/deblur/DeblurDiff/. See the README.")
        dtype = host.choose_dtype(precision, "DeblurDiff")
        model = load_deblurdiff(host.resolve_model(model_name), dtype)
        return (DeblurDiffHandle(model.to(host.offload_device()), model_name, dtype),)


class DeblurDiffSampler:
    DESCRIPTION = ("Deblurs images with DeblurDiff in one node, as the official inference.py: Stable Diffusion 2.1 "
                   "sampling steered at every step by the LKPN's per-pixel kernels through a ControlNet, then the colour fix. "
                   "fp32 with the same seed and settings gives the official result.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("DEBLURDIFF_MODEL",),
            "image": ("IMAGE", {"tooltip": "The blurry image(s). RGB, RGBA (alpha passes through) or grey; any size (padded to a multiple of 64 inside)."}),
            "positive": ("STRING", {"default": "", "multiline": True, "tooltip": "What the sharp image shows (official --pos_prompt, empty by default)."}),
            "negative": ("STRING", {"default": DEFAULT_NEGATIVE, "multiline": True, "tooltip": "What to steer away from; used only when cfg is not 1 (official --neg_prompt)."}),
            "steps": ("INT", {"default": 50, "min": 1, "max": 1000, "tooltip": "Sampling steps (official default 50). The LKPN refines its kernels at each one."}),
            "cfg": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 30.0, "step": 0.1, "tooltip": "Classifier-free guidance scale. 1 = off (official default): one network pass per step instead of two."}),
            "control_strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0, "step": 0.01, "tooltip": "Scale of the ControlNet's guidance (official 1.0). Lower lets Stable Diffusion invent more."}),
            "seed": SEED,
            "better_start": ("BOOLEAN", {"default": False, "tooltip": "Start from the noised low frequencies of the image instead of pure noise (official --better_start); avoids noise in flat backgrounds."}),
            **TILE_INPUTS,
        }, "optional": {**BLEND_INPUTS}}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The deblurred image(s).",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    def sample(self, model: DeblurDiffHandle, image, positive, negative, steps, cfg, control_strength, seed,
               better_start, tiled=False, tile_size=512, tile_stride=256, mask=None, strength=1.0, feather=0):
        split = split_image(image)
        b, _, h, w = split.rgb.shape
        options = SamplingOptions(steps=steps, cfg_scale=cfg, strength=control_strength, positive=positive, negative=negative,
                                  better_start=better_start, tiled=tiled, tile_size=tile_size, tile_stride=tile_stride)
        options.validate()
        asked = options.tile_size if options.tiled else 0
        tile = memory.plan_tile(h, w, asked, lambda th, tw: model.bytes_for(PARTS, th, tw), host.torch_device(),
                                "DeblurDiff Sampler", "tiled / tile_size", b)
        if tile != asked:
            options.tiled, options.tile_size, options.tile_stride = True, tile, tile // 2
        while True:
            device = _prepare(model, PARTS, min(h, options.tile_size) if options.tiled else h,
                              min(w, options.tile_size) if options.tiled else w)
            progress = host.Progress(b * steps_per_image(options), "DeblurDiff")
            try:
                restored = deblur(model.model, split.rgb, options, seed, device, progress.update, host.offload_device())
                break
            except Exception as error:
                if not host.is_out_of_memory(error):
                    raise
                if options.tiled and options.tile_size <= 256:
                    raise
                options.tile_size = 512 if not options.tiled or options.tile_size > 512 else options.tile_size // 2
                options.tile_stride = options.tile_size // 2
                options.tiled = True
                log.warning("DeblurDiff: out of memory; retrying in %d px tiles", options.tile_size)
            finally:
                progress.close()
                _offload(model)
        return (blend(image, join_image(restored, split, host.output_device()), mask, strength, feather),)


class DeblurDiffEncode:
    DESCRIPTION = ("First stage of DeblurDiff: the blurry image's condition latent (a sample of the autoencoder's posterior, "
                   "as the official pipeline draws it) and the starting noise of sampling, from the seed.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("DEBLURDIFF_MODEL",),
            "image": ("IMAGE", {"tooltip": "The blurry image(s)."}),
            "seed": SEED,
            "better_start": ("BOOLEAN", {"default": False, "tooltip": "Start latent from the image's noised low frequencies instead of pure noise."}),
        }}

    RETURN_TYPES = ("LATENT", "LATENT")
    RETURN_NAMES = ("condition", "start")
    OUTPUT_TOOLTIPS = ("The condition latent (autoencoder scale) that the LKPN refines at every step.",
                       "The noisy latent sampling starts from (timestep 999), in autoencoder scale.")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, model: DeblurDiffHandle, image, seed, better_start):
        split = split_image(image)
        b, _, h, w = split.rgb.shape
        options = SamplingOptions(better_start=better_start)
        device = _prepare(model, ["vae"], h, w)
        generator = torch.Generator().manual_seed(int(seed))
        conditions, starts = [], []
        scale = model.model.config.latent_scale
        try:
            with torch.inference_mode(), model.model.parts_on(["vae"], device):
                for i in range(b):
                    padded = pad_to_multiple(split.rgb[i:i + 1].to(device))
                    condition, _, start = encode_conditions(model.model, padded, options, generator)
                    conditions.append(condition / scale)
                    starts.append(start / scale)
        finally:
            _offload(model)
        return _latent(torch.cat(conditions), (h, w)), _latent(torch.cat(starts), (h, w))


class LKPNStep:
    DESCRIPTION = ("One LKPN pass: predicts a 5x5 kernel per latent pixel and channel from the condition latent, the noisy "
                   "latent, the timestep and the prompt, and applies them to the condition (EAC + residual), as DeblurDiff "
                   "does at every sampling step. Shows the kernels.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("DEBLURDIFF_MODEL",),
            "condition": ("LATENT", {"tooltip": "The condition latent from DeblurDiff Encode."}),
            "noisy": ("LATENT", {"tooltip": "The current noisy latent (DeblurDiff Encode's start for the first step)."}),
            "timestep": ("INT", {"default": 999, "min": 0, "max": 999, "tooltip": "Diffusion timestep of the noisy latent (999 = the first step)."}),
            "positive": ("STRING", {"default": "", "multiline": True, "tooltip": "The prompt the LKPN cross-attends to."}),
        }}

    RETURN_TYPES = ("LATENT", "BLUR_KERNEL", "IMAGE")
    RETURN_NAMES = ("refined", "kernels", "preview")
    OUTPUT_TOOLTIPS = ("The refined condition latent (what guides the ControlNet at this step); decode it to see it.",
                       "The per-pixel kernels as a BLUR_KERNEL map (grid = latent size); raw signed weights under 'lkpn'.",
                       "The kernels drawn over the image's area (one per cell of ~48 px): red positive, blue negative.")
    FUNCTION = "step"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY

    def step(self, model: DeblurDiffHandle, condition, noisy, timestep, positive=""):
        net = model.model
        channels = net.config.vae.latent_channels
        cond = _check_latent(condition, "condition", channels)
        x = _check_latent(noisy, "noisy", channels)
        if cond.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"condition {tuple(cond.shape[-2:])} and noisy {tuple(x.shape[-2:])} latents differ in size")
        if x.shape[0] not in (1, cond.shape[0]):
            raise ValueError(f"noisy latent batch {x.shape[0]} does not match the condition's {cond.shape[0]}")
        x = x.expand(cond.shape[0], *x.shape[1:])
        scale = net.config.latent_scale
        device = _prepare(model, ["text_encoder", "lkpn"], cond.shape[-2] * 8, cond.shape[-1] * 8)
        try:
            with torch.inference_mode():
                with net.parts_on(["text_encoder"], device, host.offload_device()):
                    text = net.encode_text(positive)
                with net.parts_on(["lkpn"], device):
                    t = torch.tensor([int(timestep)], device=device)
                    refined, kernels = [], []
                    for i in range(cond.shape[0]):
                        r, k = net.refine((x[i:i + 1] * scale).to(device), t, (cond[i:i + 1] * scale).to(device), text)
                        refined.append(r / scale)
                        kernels.append(k)
        finally:
            _offload(model)
        kernels = torch.cat(kernels).cpu()
        value = blur_kernel_maps(kernels, int(timestep))
        height, width = condition.get(SIZE_KEY) or (cond.shape[-2] * 8, cond.shape[-1] * 8)
        picture = preview(kernels, height, width).permute(0, 2, 3, 1).contiguous().to(host.output_device())
        latent = {**condition, "samples": torch.cat(refined).float().cpu()}
        result = (latent, value, picture)
        try:
            from .kernel_ui import kernel_ui
        except ImportError:  # the frontend payload is optional
            return result
        return {"ui": kernel_ui(value), "result": result}


class DeblurDiffDecode:
    DESCRIPTION = ("Last stage of DeblurDiff: decodes a latent with the autoencoder, crops the padding and, given the blurry "
                   "input as reference, applies the official colour fix (per-channel mean and spread of the input).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("DEBLURDIFF_MODEL",),
            "latent": ("LATENT", {"tooltip": "A DeblurDiff latent (autoencoder scale), e.g. LKPN Step's refined latent."}),
            **TILE_INPUTS,
        }, "optional": {
            "reference": ("IMAGE", {"tooltip": "The blurry input: the output is cropped to its size and colour-fixed against it, as the official pipeline does; mask and strength blend back into it."}),
            **BLEND_INPUTS,
        }}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image(s).",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, model: DeblurDiffHandle, latent, tiled=False, tile_size=512, tile_stride=256, reference=None,
               mask=None, strength=1.0, feather=0):
        net = model.model
        if reference is None and (mask is not None or float(strength) != 1.0):
            raise ValueError("DeblurDiff Decode: mask and strength blend the result into the blurry input; connect it to 'reference'")
        samples = _check_latent(latent, "latent", net.config.vae.latent_channels)
        options = SamplingOptions(tiled=tiled, tile_size=tile_size, tile_stride=tile_stride)
        options.validate()
        split = split_image(reference, "reference") if reference is not None else None
        size = tuple(latent.get(SIZE_KEY) or (samples.shape[-2] * 8, samples.shape[-1] * 8))
        if split is not None:
            size = tuple(split.rgb.shape[-2:])
            if split.rgb.shape[0] not in (1, samples.shape[0]):
                raise ValueError(f"reference batch {split.rgb.shape[0]} does not match the latent batch {samples.shape[0]}")
        device = _prepare(model, ["vae"], samples.shape[-2] * 8, samples.shape[-1] * 8)
        outputs = []
        try:
            with torch.inference_mode(), net.parts_on(["vae"], device):
                for i in range(samples.shape[0]):
                    decoded = decode(net, (samples[i:i + 1] * net.config.latent_scale).to(device), options)
                    if split is not None:
                        reference_image = split.rgb[min(i, split.rgb.shape[0] - 1):][:1].to(device)
                        outputs.append(finish(decoded, reference_image).cpu())
                    else:
                        outputs.append(((decoded[:, :, :size[0], :size[1]] + 1) / 2).cpu())
        finally:
            _offload(model)
        images = torch.cat(outputs)
        if split is not None and split.rgb.shape[0] == images.shape[0]:
            return (blend(reference, join_image(images, split, host.output_device()), mask, strength, feather),)
        out = images.clamp(0, 1).permute(0, 2, 3, 1).contiguous().to(host.output_device())
        if split is not None:  # one reference for a batch of latents: blend its colours into each
            out = blend(reference[..., :3] if reference.shape[-1] == 4 else reference.expand(*reference.shape[:3], 3),
                        out, mask, strength, feather)
        return (out,)


NODE_CLASS_MAPPINGS = {
    "DeblurDiffLoader": DeblurDiffLoader,
    "DeblurDiffSampler": DeblurDiffSampler,
    "DeblurDiffEncode": DeblurDiffEncode,
    "LKPNStep": LKPNStep,
    "DeblurDiffDecode": DeblurDiffDecode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DeblurDiffLoader": "DeblurDiff Loader",
    "DeblurDiffSampler": "DeblurDiff Sampler",
    "DeblurDiffEncode": "DeblurDiff Encode",
    "LKPNStep": "LKPN Step (DeblurDiff kernels)",
    "DeblurDiffDecode": "DeblurDiff Decode",
}
