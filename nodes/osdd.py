"""OSDD nodes: loader, the one-node deblur, and the stages (eVAE Encode, OSDD One Step, eVAE Decode).

``LATENT`` values hold the autoencoder's latents unscaled (``{"samples": [B, 4, H/8, W/8]}``), as ComfyUI's
own nodes, DeblurDiff's and FideDiff's do, so eVAE Decode takes a latent from any of them. ``EVAE_SKIPS``
carries the blurry image's encoder features (one tensor per level, on the CPU in the model's precision),
the image size before padding and its alpha channel.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..models.common import memory
from ..models.common.padding import crop_to, pad_to_multiple
from ..models.osdd import OSDD, Skips, Tiling, deblur, find_osdd_models, load_osdd
from ..models.sd21.base import load_base
from . import host
from .blend import BLEND_INPUTS, blend
from .images import SplitImage, join_image, split_image
from ..models.sd21.base_files import base_choices, resolve_base

log = logging.getLogger(__name__)

CATEGORY = "deblur/OSDD"
NO_BASE = "(no Stable Diffusion 2.1 model found: see README, OSDD)"
NO_WEIGHTS = "(no OSDD weights found: see README, OSDD)"
SIZE_KEY = "osdd_size"
SIZE_KEYS = (SIZE_KEY, "fidediff_size", "deblurdiff_size")  # image sizes before padding that encoders record
ACTIVATION_BYTES_PER_PIXEL = 3_000  # rough fp32 peak per image pixel (skips kept, one UNet pass)
GAMMA_MODES = ["auto", "fixed"]
GAMMA_INPUTS = {
    "gamma_mode": (GAMMA_MODES, {"default": "auto", "tooltip": "auto = the model's gate picks γ per image from the blurry image's "
                                 "features; fixed = use the γ below for every image."}),
    "gamma": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.05, "tooltip": "Dual-adapter mix when fixed: 1 = the adapter "
                        "trained on real captured blur (fidelity), 0 = the one trained on the synthetic sharp set (crisper detail)."}),
}
TILE_INPUTS = {
    "tiled": ("BOOLEAN", {"default": False, "tooltip": "Work in overlapping tiles: memory follows the tile, not the image. The eVAE's "
                          "skips are cut on the same grid as the latent at every level."}),
    "tile_size": ("INT", {"default": 512, "min": 64, "max": 4096, "step": 64, "tooltip": "Tile side in image pixels."}),
    "tile_stride": ("INT", {"default": 256, "min": 8, "max": 4096, "step": 8, "tooltip": "Distance between tiles in image pixels."}),
}


@dataclass
class OSDDHandle:
    """What flows along an OSDD_MODEL link."""
    model: OSDD
    name: str
    dtype: torch.dtype

    def bytes_for(self, height: int, width: int) -> int:
        return host.module_bytes(self.model) + ACTIVATION_BYTES_PER_PIXEL * torch.finfo(self.dtype).bits // 32 * height * width


@dataclass
class EVAESkipsValue:
    """What flows along an EVAE_SKIPS link."""
    skips: Skips
    image_size: tuple[int, int]  # before padding
    split: SplitImage  # alpha and channel layout of the input, for the decoded IMAGE


def list_weights() -> list[str]:
    return host.find_in_model_dirs(find_osdd_models) or [NO_WEIGHTS]


def _tiling(tiled: bool, tile_size: int, tile_stride: int) -> Tiling | None:
    if not tiled:
        return None
    if tile_stride > tile_size:
        raise ValueError(f"tile_stride ({tile_stride}) must not exceed tile_size ({tile_size})")
    return Tiling(int(tile_size), int(tile_stride))


def _run(handle: OSDDHandle, size: tuple[int, int], steps: int, fn):
    """``fn(model, device, tick)`` with memory freed for it, a progress bar that checks for Cancel, and
    the model offloaded afterwards (stages move the parts they need to ``device``)."""
    device = host.torch_device()
    host.free_memory(handle.bytes_for(*size), device)
    progress = host.Progress(steps, "OSDD")
    try:
        with torch.inference_mode():
            return fn(handle.model, device, progress.update)
    finally:
        progress.close()
        handle.model.to(host.offload_device())
        host.soft_empty_cache()


def _samples(value, name: str = "latent") -> torch.Tensor:
    samples = value.get("samples") if isinstance(value, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or samples.shape[1] != 4:
        got = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name}: expected an SD 2.x LATENT [batch, 4, h, w], got {got}")
    return samples


def _skips(value, name: str = "skips") -> EVAESkipsValue:
    if not isinstance(value, EVAESkipsValue):
        raise ValueError(f"{name}: expected the EVAE_SKIPS output of eVAE Encode, got {type(value).__name__}")
    return value


def _context(conditioning) -> torch.Tensor | None:
    """The text encoding of a ComfyUI CONDITIONING (its first entry), or None."""
    if conditioning is None:
        return None
    try:
        return conditioning[0][0].float()
    except (TypeError, IndexError, AttributeError):
        raise ValueError("positive: expected a CONDITIONING (from CLIP Text Encode with an SD 2.x checkpoint)") from None


class OSDDLoader:
    DESCRIPTION = ("Loads OSDD: your Stable Diffusion 2.1 (512, base) checkpoint plus OSDD's weights from models/deblur/OSDD/ "
                   "(eVAE skip blocks, encoder LoRA, the two UNet adapters of the dynamic dual adapter, the γ gate, the prompt "
                   "embedding). The weights check that they were trained on this base.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "base": (base_choices() or [NO_BASE], {"tooltip": "SD 2.1 from models/checkpoints (single file), models/diffusers "
                                                               "(folder) or DeblurDiff's model.pth in models/deblur."}),
            "weights": (list_weights(), {"tooltip": "OSDD's .safetensors (tools/train_osdd.py writes them)."}),
            "precision": (list(host.PRECISIONS), {"default": "auto", "tooltip": "auto = fp16 on CUDA and Apple GPUs, fp32 on the CPU."}),
            "check_base": ("BOOLEAN", {"default": True, "tooltip": "Refuse a base other than the one the weights were trained on (its fingerprint). Off at your own risk."}),
        }}

    RETURN_TYPES = ("OSDD_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("SD 2.1 UNet with the dual adapter, the eVAE (encoder LoRA merged, skip blocks), the γ gate.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, base, weights, precision="auto", check_base=True):
        if base == NO_BASE:
            raise FileNotFoundError("No Stable Diffusion 2.1 model found: put v2-1_512-ema-pruned.safetensors (or a diffusers "
                                    "folder) in ComfyUI's models/checkpoints (or models/diffusers). See the README, OSDD.")
        if weights == NO_WEIGHTS:
            raise FileNotFoundError(f"No OSDD weights in {host.model_dirs() or 'models/deblur'}: train them with "
                                    "tools/train_osdd.py and put the file in models/deblur/OSDD/. See the README.")
        dtype = host.choose_dtype(precision, "OSDD")
        model = load_osdd(host.resolve_model(weights), load_base(resolve_base(base), dtype), check_base=check_base)
        return (OSDDHandle(model.to(host.offload_device()), weights, dtype),)


class OSDDDeblur:
    DESCRIPTION = ("Deblurs images with OSDD in one node: eVAE encoder on the blurry image, one diffusion step with the "
                   "dynamic dual adapter, eVAE decoder fed with the blurry image's features.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("OSDD_MODEL",),
            "image": ("IMAGE", {"tooltip": "The blurry image(s). RGB, RGBA (alpha passes through) or grey; any size (padded inside)."}),
            **GAMMA_INPUTS, **TILE_INPUTS,
        }, "optional": {**BLEND_INPUTS}}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The deblurred image(s).",)
    FUNCTION = "deblur"
    CATEGORY = CATEGORY

    def deblur(self, model: OSDDHandle, image, gamma_mode="auto", gamma=0.5, tiled=False, tile_size=512, tile_stride=256,
               mask=None, strength=1.0, feather=0):
        split = split_image(image)
        b, _, h, w = split.rgb.shape
        tiling = _tiling(tiled, tile_size, tile_stride)
        choice = "auto" if gamma_mode == "auto" else float(gamma)
        asked = tiling.tile if tiling else 0
        tile = memory.plan_tile(h, w, asked, model.bytes_for, host.torch_device(), "OSDD Deblur", "tiled / tile_size", b)
        tiling = Tiling(tile, tile // 2) if tile != asked else tiling

        def run(net, device, tick):
            out, gammas = deblur(net, split.rgb, choice, device, tiling, tick, host.check_interrupt, host.offload_device())
            log.info("OSDD: γ per image %s", ", ".join(f"{g:.3f}" for g in gammas))
            return out

        while True:
            size = (min(h, tiling.tile), min(w, tiling.tile)) if tiling else (h, w)
            try:
                restored = join_image(_run(model, size, b, run), split, host.output_device())
                return (blend(image, restored, mask, strength, feather),)
            except Exception as error:
                if not host.is_out_of_memory(error):
                    raise
                if tiling is not None and tiling.tile <= 256:
                    raise
                tiling = Tiling(512, 256) if tiling is None or tiling.tile > 512 else Tiling(tiling.tile // 2, tiling.tile // 4)
                log.warning("OSDD: out of memory; retrying in %d px tiles", tiling.tile)


class EVAEEncode:
    DESCRIPTION = ("First stage of OSDD: the eVAE's encoder on the blurry image gives the latent (posterior mean) and the "
                   "skip features its decoder will use. The image is padded to the UNet's size multiple (cropped back at decode).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("OSDD_MODEL",), "image": ("IMAGE", {"tooltip": "The blurry image(s)."}), **TILE_INPUTS}}

    RETURN_TYPES = ("LATENT", "EVAE_SKIPS")
    RETURN_NAMES = ("latent", "skips")
    OUTPUT_TOOLTIPS = ("The blurry image's latent (autoencoder scale): OSDD One Step's input, or any SD 2.x node's.",
                       "The encoder features per resolution, for eVAE Decode and the γ gate (about 0.9 kB per pixel in fp32 for SD's autoencoder, half in fp16).")
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, model: OSDDHandle, image, tiled=False, tile_size=512, tile_stride=256):
        split = split_image(image)
        b, _, h, w = split.rgb.shape
        tiling = _tiling(tiled, tile_size, tile_stride)

        def run(net, device, tick):
            latents, features = [], []
            with net.parts_on(["evae"], device):
                for single in split.rgb.split(1):
                    host.check_interrupt()
                    padded, _ = pad_to_multiple(single.to(device), net.pad_multiple)
                    latent, skips = net.encode(padded, tiling)
                    latents.append(latent.float().cpu())
                    features.append([f.to(host.output_device()) for f in skips.features])
                    tick()
            return torch.cat(latents), [torch.cat(level) for level in zip(*features)]

        samples, features = _run(model, (h, w), b, run)
        skips = Skips(features, tuple(samples.shape[-2:]))
        return {"samples": samples, SIZE_KEY: [h, w]}, EVAESkipsValue(skips, (h, w), split)


class OSDDOneStep:
    DESCRIPTION = ("OSDD's diffusion step: reads the blurry latent as the noisy latent at timestep 999 and predicts the sharp "
                   "latent in one deterministic UNet pass, with the two adapters mixed by γ (the gate's, from the skips, or yours).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("OSDD_MODEL",),
            "latent": ("LATENT", {"tooltip": "The blurry image's latent (eVAE Encode, or any SD 2.x encoder)."}),
            **GAMMA_INPUTS, **TILE_INPUTS,
        }, "optional": {
            "skips": ("EVAE_SKIPS", {"tooltip": "eVAE Encode's skips of the same image: needed for gamma_mode auto (the gate reads them)."}),
            "positive": ("CONDITIONING", {"tooltip": "Optional prompt from CLIP Text Encode (SD 2.x checkpoint). Without it: the prompt "
                                                     "embedding stored in OSDD's weights."}),
        }}

    RETURN_TYPES = ("LATENT",)
    RETURN_NAMES = ("latent",)
    OUTPUT_TOOLTIPS = ("The predicted sharp latent (autoencoder scale); decode it with eVAE Decode (or any SD 2.x VAE Decode).",)
    FUNCTION = "step"
    CATEGORY = CATEGORY

    def step(self, model: OSDDHandle, latent, gamma_mode="auto", gamma=0.5, tiled=False, tile_size=512, tile_stride=256,
             skips=None, positive=None):
        samples = _samples(latent)
        b, _, lh, lw = samples.shape
        tiling = _tiling(tiled, tile_size, tile_stride)
        context = _context(positive)
        if gamma_mode == "auto" and skips is None:
            raise ValueError("OSDD One Step: gamma_mode 'auto' needs the skips of eVAE Encode (the gate reads them); "
                             "connect them or choose 'fixed'")
        f = model.model.evae.downsampling

        def run(net, device, tick):
            if gamma_mode == "auto":
                value = _skips(skips)
                net.evae.check_skips(samples, value.skips)
                with net.parts_on(["gate"], device):
                    g = net.gamma_from(value.skips).cpu()
                g = g.expand(b) if g.shape[0] == 1 else g
            else:
                g = torch.full((b,), float(gamma))
            with net.parts_on(["unet", "text"], device):
                out = net.step(samples.to(device), g, context, tiling)
            tick()
            return out.float().cpu()

        out = _run(model, (lh * f, lw * f), 1, run)
        return ({**latent, "samples": out},)


class EVAEDecode:
    DESCRIPTION = ("Last stage of OSDD: decodes any SD 2.x latent (OSDD One Step's, FideDiff's d = 8 step, DeblurDiff's, a "
                   "KSampler's) with the eVAE, whose decoder also sees the blurry image's encoder features (skips). Without "
                   "skips it is the plain SD decoder.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("OSDD_MODEL",),
            "latent": ("LATENT", {"tooltip": "A latent of the same (padded) size as the skips' image, autoencoder scale."}),
            **TILE_INPUTS,
        }, "optional": {
            "skips": ("EVAE_SKIPS", {"tooltip": "eVAE Encode's skips of the blurry image; their size must match the latent's. "
                                                "They carry the blurry image, which mask and strength blend the result back into."}),
            **BLEND_INPUTS,
        }}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image(s), cropped to the encoded image's size.",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, model: OSDDHandle, latent, tiled=False, tile_size=512, tile_stride=256, skips=None,
               mask=None, strength=1.0, feather=0):
        samples = _samples(latent)
        if skips is None and (mask is not None or float(strength) != 1.0):
            raise ValueError("eVAE Decode: mask and strength blend the result into the blurry image, which the skips carry; "
                             "connect eVAE Encode's skips")
        b = samples.shape[0]
        value = _skips(skips) if skips is not None else None
        if value is not None:
            model.model.evae.check_skips(samples, value.skips)
        tiling = _tiling(tiled, tile_size, tile_stride)
        f = model.model.evae.downsampling
        known = next((latent[k] for k in SIZE_KEYS if k in latent), None)  # another method's encoder size
        size = tuple(value.image_size if value else known or (samples.shape[-2] * f, samples.shape[-1] * f))

        def run(net, device, tick):
            images = []
            with net.parts_on(["evae"], device):
                for i in range(b):
                    host.check_interrupt()
                    part = None
                    if value is not None:
                        part = value.skips.select(slice(i, i + 1) if value.skips.features[0].shape[0] > 1 else slice(0, 1))
                    images.append(crop_to(net.decode(samples[i:i + 1].to(device), part, tiling), size).cpu())
                    tick()
            return torch.cat(images)

        rgb = _run(model, size, b, run)
        like = value.split if value is not None and value.split.rgb.shape[0] == b else SplitImage(rgb, None, 3)
        out = join_image(rgb, like, host.output_device())
        if value is None:
            return (out,)
        blurry = join_image(value.split.rgb, like if like is value.split else SplitImage(rgb, None, 3), host.output_device())
        return (blend(blurry, out, mask, strength, feather),)


NODE_CLASS_MAPPINGS = {
    "OSDDLoader": OSDDLoader,
    "OSDDDeblur": OSDDDeblur,
    "eVAEEncode": EVAEEncode,
    "OSDDOneStep": OSDDOneStep,
    "eVAEDecode": EVAEDecode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "OSDDLoader": "OSDD Loader",
    "OSDDDeblur": "OSDD Deblur",
    "eVAEEncode": "eVAE Encode",
    "OSDDOneStep": "OSDD One Step",
    "eVAEDecode": "eVAE Decode",
}
