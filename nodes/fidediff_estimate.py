"""Blur Kernel Estimate: FideDiff's kernel estimator M and blur-level regressor T on any photo.

The bundled estimator (trained on the CPU on synthetic blur, see models/fidediff/default/MODEL_CARD.md)
is listed first; FideDiff adapter files and estimator files under models/deblur/ follow.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..models.blur.blur_kernel import make_blur_kernel
from ..models.blur.frames import LEVEL_PER_FRAME
from ..models.fidediff.estimator import LEVEL_MAX, LEVEL_STRIDE
from ..models.fidediff.estimator_model import (DEFAULT_NAME, DEFAULT_PATH, OVERLAP, BlurEstimator, default_available,
                                               find_estimator_models, load_blur_estimator, tile_count)
from ..models.fidediff.level_view import level_picture
from . import host
from .images import split_image
from .kernel_ui import kernel_ui

CATEGORY = "deblur/FideDiff"
NO_MODEL = "(no kernel estimator found: see README, weights)"
_cache: dict[tuple[str, float], BlurEstimator] = {}


def list_estimators() -> list[str]:
    names = [DEFAULT_NAME] if default_available() else []
    names += [n for n in host.find_in_model_dirs(find_estimator_models) if n not in names]
    return names or [NO_MODEL]


def load_estimator(name: str) -> BlurEstimator:
    if name == NO_MODEL:
        raise FileNotFoundError("No kernel estimator: the bundled one is missing from models/fidediff/default/ and "
                                f"no FideDiff adapter was found in {host.model_dirs() or 'models/deblur'}. See the README.")
    path = DEFAULT_PATH if name == DEFAULT_NAME else host.resolve_model(name)
    key = (os.path.abspath(path), os.path.getmtime(path))
    if key not in _cache:
        _cache.clear()  # one estimator at a time: they are small, but not free
        _cache[key] = load_blur_estimator(path)
    return _cache[key]


class BlurKernelEstimate:
    DESCRIPTION = ("Estimates the blur of a photo: a blur kernel for every 8x8 pixels (FideDiff's kernel estimator M) "
                   "and how blurred it is, as FideDiff's blur level t in 0..400 (20 per extra frame of a frame-averaged "
                   "blur; its regressor T), for the whole image and as a map. Works on any photo with the bundled estimator.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The blurry photo(s)."}),
                "estimator": (list_estimators(), {"tooltip": "The bundled estimator (no download), or the estimator inside a FideDiff adapter file under models/deblur/FideDiff/."}),
            },
            "optional": {
                "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64,
                                      "tooltip": "Larger images are estimated tile by tile (memory follows the tile). Each tile gets its own kernel basis."}),
            },
        }

    RETURN_TYPES = ("BLUR_KERNEL", "FLOAT", "IMAGE", "STRING", "MASK")  # the MASK last: older links keep their slots
    RETURN_NAMES = ("kernels", "blur_level", "level_map", "report", "level_mask")
    OUTPUT_TOOLTIPS = (
        "Per-pixel kernel map: one kernel per 8x8 pixels (the grid of FideDiff's latent), drawn by Blur Kernel Preview; "
        "the blur level of each image rides along.",
        "Blur level t in 0..400 (mean over the batch): FideDiff's timestep. 0 = sharp; 200 = like 11 frames averaged.",
        "Where the image is blurred and how much: T's level map in heat colours over the photo, with a colour bar.",
        "The level of each image, as text.",
        "T's level map as a MASK at the image's size: level / 400, so 0 = sharp, 0.5 = like 11 frames averaged, "
        "1 = the strongest blur. Feed it to a deblur node's mask to deblur where the photo is blurred.",
    )
    FUNCTION = "estimate"
    OUTPUT_NODE = True  # draws the kernels on the node
    CATEGORY = CATEGORY

    def estimate(self, image, estimator, tile_size=512):
        rgb = split_image(image).rgb
        model = load_estimator(estimator)
        b, _, h, w = rgb.shape
        device = host.torch_device()
        host.free_memory(host.module_bytes(model) + 4000 * min(h * w, tile_size * tile_size), device)
        progress = host.Progress(b * tile_count(h, w, tile_size, OVERLAP), "kernel estimation")
        outputs = []
        try:
            model.to(device)
            for index in range(b):
                outputs.append(model.estimate(rgb[index:index + 1], tile_size, OVERLAP, progress.update))
        finally:
            progress.close()
            model.to(host.offload_device())
            host.soft_empty_cache()
        m = model.kernel_size
        grids = torch.cat([o.kernel_map.float().cpu() for o in outputs])  # [B, m², gh, gw]
        gh, gw = grids.shape[-2:]
        levels = [float(o.level) for o in outputs]
        kernels = grids.permute(0, 2, 3, 1).reshape(b, gh, gw, m, m)
        kernels = kernels.clamp_min(0) / kernels.sum((-2, -1), keepdim=True)
        info = [{"kind": "estimated", "size": m, "grid": [gh, gw], "stride_px": LEVEL_STRIDE, "estimator": estimator,
                 "level": round(level, 1)} for level in levels]
        value = make_blur_kernel(kernels, level=[round(t, 1) for t in levels], info=info)
        pictures = torch.stack([level_picture(rgb[i], outputs[i].level_map[0].float().cpu(), levels[i]) for i in range(b)])
        report = "\n".join(f"image {i}: blur level {t:.0f} / 400 (like {t / LEVEL_PER_FRAME + 1:.1f} frames averaged)"
                           for i, t in enumerate(levels))
        maps = torch.cat([o.level_map.float().cpu() for o in outputs])  # [B, 1, h, w]
        mask = (F.interpolate(maps, size=(h, w), mode="bilinear", align_corners=False)[:, 0] / LEVEL_MAX).clamp(0, 1)
        result = (value, sum(levels) / b, pictures.permute(0, 2, 3, 1).contiguous().to(host.output_device()), report,
                  mask.contiguous().to(host.output_device()))
        return {"ui": kernel_ui(value), "result": result}


NODE_CLASS_MAPPINGS = {"BlurKernelEstimate": BlurKernelEstimate}
NODE_DISPLAY_NAME_MAPPINGS = {"BlurKernelEstimate": "Blur Kernel Estimate (FideDiff M + T)"}
