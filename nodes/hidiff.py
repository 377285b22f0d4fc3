"""HI-Diff nodes: loader, the two stages (prior, restore) and the one-node deblur."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from ..models import methods
from ..models.common import memory, runtime
from ..models.common.checkpoint import CheckpointError
from ..models.hidiff.default_model import DEFAULT_NAME, DEFAULT_PATH
from ..models.hidiff import HIDiff, compute_priors, deblur, load_hidiff, restore_with_priors, steps_per_image
from . import host
from .blend import BLEND_INPUTS, blend
from .images import join_image, split_image

log = logging.getLogger(__name__)

CATEGORY = "deblur/HI-Diff"
PRECISIONS = [p for p in host.PRECISIONS if p != "auto"]  # fp32 first: the official results
NO_MODEL = "(no HI-Diff model found: see README, weights)"
SEED = ("INT", {"default": 100, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                "tooltip": "Seed of the prior's starting noise. The official test uses 100."})


@dataclass
class HIDiffHandle:
    """What flows along a HIDIFF_MODEL link: the model and how to run it."""
    model: HIDiff
    name: str
    dtype: torch.dtype

    def bytes_for(self, height: int, width: int) -> int:
        # Peak activations of net_g at full resolution: ~6 kB per pixel in fp32 at the official width.
        per_pixel = methods.hidiff_bytes_per_pixel(self.model) * torch.finfo(self.dtype).bits // 32
        return host.module_bytes(self.model) + per_pixel * height * width


def list_models() -> list[str]:
    return methods.list_models(methods.HIDIFF) or [NO_MODEL]  # the bundled model first: the default


def _check() -> None:
    """Cancel between the restoration's blocks (looked up on each call, so tests can stand in for the host)."""
    host.check_interrupt()


def _run(handle: HIDiffHandle, size: tuple[int, int], steps: int, desc: str, fn):
    """``fn(model, device, on_step)`` on the compute device (see ``runtime.run_on_device``); ``size`` is
    the largest region processed at once, for the memory request."""
    return runtime.run_on_device(handle.model, handle.bytes_for(*size), steps, desc, fn)


class HIDiffLoader:
    DESCRIPTION = "Loads an HI-Diff model from models/deblur/: an official release folder (net_g.pth, net_le_dm.pth, net_d.pth) or a merged .safetensors."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model_name": (list_models(), {"tooltip": "A folder of the official release (e.g. HI_Diff_GoPro) or a .safetensors made by the converter, under models/deblur/."}),
            "precision": (PRECISIONS, {"default": "fp32", "tooltip": "Precision of the restoration transformer. fp32 reproduces the official results; fp16/bf16 halve memory on GPUs that support them."}),
        }}

    RETURN_TYPES = ("HIDIFF_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("The loaded HI-Diff model (restoration transformer, latent encoder and prior denoiser).",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, model_name, precision="fp32"):
        if model_name == NO_MODEL:
            raise FileNotFoundError(f"No HI-Diff model in {host.model_dirs() or 'models/deblur'}: download an official release folder (e.g. HI_Diff_GoPro with net_g.pth, net_le_dm.pth, net_d.pth) into models/deblur/. See the README.")
        dtype = host.choose_dtype(precision, "HI-Diff")
        path = DEFAULT_PATH if model_name == DEFAULT_NAME else host.resolve_model(model_name)
        model = load_hidiff(path).set_precision(dtype)
        return (HIDiffHandle(model.to(host.offload_device()), model_name, dtype),)


class HIDiffPrior:
    DESCRIPTION = "Runs HI-Diff's latent diffusion alone: encodes the blurry image and denoises a seeded prior (8 or 16 steps). Feed it to HI-Diff Restore."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("HIDIFF_MODEL",),
            "image": ("IMAGE", {"tooltip": "The blurry image the prior describes."}),
            "seed": SEED,
        }}

    RETURN_TYPES = ("HIDIFF_PRIOR",)
    RETURN_NAMES = ("prior",)
    OUTPUT_TOOLTIPS = ("The prior tokens, one set per image of the batch.",)
    FUNCTION = "prior"
    CATEGORY = CATEGORY

    def prior(self, model: HIDiffHandle, image, seed):
        split = split_image(image)
        b, _, h, w = split.rgb.shape
        memory.check_fits(h, w, model.bytes_for, host.torch_device(), "HI-Diff Prior", "HI-Diff Deblur's tile_size bounds memory", b)
        steps = b * model.model.sampler.config.timesteps
        return (_run(model, (h, w), steps, "HI-Diff prior",
                     lambda net, device, on_step: compute_priors(net, split.rgb.to(device), seed, on_step).cpu()),)


class HIDiffRestore:
    DESCRIPTION = "Runs HI-Diff's restoration transformer on the blurry image, guided by a prior from HI-Diff Prior."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("HIDIFF_MODEL",),
            "image": ("IMAGE", {"tooltip": "The blurry image (the same one the prior was made from)."}),
            "prior": ("HIDIFF_PRIOR",),
        }, "optional": {**BLEND_INPUTS}}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The deblurred image.",)
    FUNCTION = "restore"
    CATEGORY = CATEGORY

    def restore(self, model: HIDiffHandle, image, prior, mask=None, strength=1.0, feather=0):
        split = split_image(image)
        b, _, h, w = split.rgb.shape
        expected = model.model.prior_shape
        if not isinstance(prior, torch.Tensor) or tuple(prior.shape[1:]) != expected:
            got = tuple(prior.shape) if isinstance(prior, torch.Tensor) else type(prior).__name__
            raise ValueError(f"prior: this model needs priors of shape [batch, {expected[0]}, {expected[1]}], got {got}; make it with HI-Diff Prior and the same model")
        if prior.shape[0] not in (1, b):
            raise ValueError(f"prior: made for a batch of {prior.shape[0]} images but the image batch has {b}")
        priors = prior.expand(b, *expected)
        memory.check_fits(h, w, model.bytes_for, host.torch_device(), "HI-Diff Restore", "HI-Diff Deblur's tile_size bounds memory", b)
        restored = _run(model, (h, w), b, "HI-Diff restore",
                        lambda net, device, on_step: restore_with_priors(net, split.rgb.to(device), priors.to(device), on_step, _check))
        return (blend(image, join_image(restored, split, host.output_device()), mask, strength, feather),)


class HIDiffDeblur:
    DESCRIPTION = "Deblurs an image with HI-Diff in one node: prior diffusion then restoration. Untiled reproduces the official test exactly; tiles bound memory on large images."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("HIDIFF_MODEL",),
            "image": ("IMAGE", {"tooltip": "The blurry image(s). RGB, RGBA (alpha passes through) or grey; any size."}),
            "seed": SEED,
            "tile_size": ("INT", {"default": 0, "min": 0, "max": 8192, "step": 8, "tooltip": "0 = whole image at once (exact official result). Otherwise the side of square tiles; memory then grows with the tile, not the image."}),
            "tile_overlap": ("INT", {"default": 32, "min": 0, "max": 512, "step": 8, "tooltip": "Overlap between tiles, blended smoothly to hide seams."}),
        }, "optional": {**BLEND_INPUTS}}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The deblurred image.",)
    FUNCTION = "deblur"
    CATEGORY = CATEGORY

    def deblur(self, model: HIDiffHandle, image, seed, tile_size=0, tile_overlap=32, mask=None, strength=1.0, feather=0):
        split = split_image(image)
        b, _, h, w = split.rgb.shape
        if tile_size and tile_overlap >= tile_size:
            raise ValueError(f"tile_overlap ({tile_overlap}) must be smaller than tile_size ({tile_size})")
        tile = memory.plan_tile(h, w, tile_size, model.bytes_for, host.torch_device(), "HI-Diff Deblur", "tile_size", b)
        overlap = tile_overlap if tile == tile_size else min(tile_overlap, tile // 4)
        while True:
            steps = b * steps_per_image(model.model, h, w, tile, overlap)
            try:
                restored = _run(model, (min(h, tile or h), min(w, tile or w)), steps, "HI-Diff",
                                lambda net, device, on_step: deblur(net, split.rgb.to(device), seed, tile, overlap, on_step, _check))
                break
            except Exception as error:
                if not host.is_out_of_memory(error):
                    raise
                tile = 512 if not tile or tile > 512 else tile // 2
                if tile < 128:
                    raise
                log.warning("HI-Diff: out of memory; retrying with %d px tiles", tile)
        return (blend(image, join_image(restored, split, host.output_device()), mask, strength, feather),)


NODE_CLASS_MAPPINGS = {
    "HIDiffLoader": HIDiffLoader,
    "HIDiffPrior": HIDiffPrior,
    "HIDiffRestore": HIDiffRestore,
    "HIDiffDeblur": HIDiffDeblur,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "HIDiffLoader": "HI-Diff Loader",
    "HIDiffPrior": "HI-Diff Prior (latent diffusion)",
    "HIDiffRestore": "HI-Diff Restore (HIM transformer)",
    "HIDiffDeblur": "HI-Diff Deblur",
}
