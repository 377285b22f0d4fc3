"""FideDiff nodes: loader (the user's SD 2.1 base + a FideDiff adapter), the one-node deblur, and the
stages (encode at d = 4 | 8, the Kernel ControlNet step, decode). ``BlurKernelEstimate`` (the kernels
and blur level) is in the estimator's module.

``LATENT`` values carry the autoencoder's latents (× 0.18215 = diffusion space), plus ``fidediff_size``
(the image size before padding) and ``fidediff_d`` (the latent downsampling) for the decoder.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from ..models.blur.blur_kernel import check_blur_kernel
from ..models.common import memory
from ..models.common.padding import pad_to_multiple
from ..models.fidediff import FideDiff, find_adapters, fit_kernel_size, kernel_input, load_fidediff
from ..models.fidediff.pipeline import STAGES, DeblurOptions, deblur, resolve_timestep
from . import host
from .blend import BLEND_INPUTS, blend
from .images import join_image, split_image
from ..models.sd21.base_files import base_choices, resolve_base

log = logging.getLogger(__name__)

CATEGORY = "deblur/FideDiff"
NO_BASE = "(none: put Stable Diffusion 2.1 in models/checkpoints; see README, FideDiff)"
NO_ADAPTER = "(no FideDiff adapter found: see README, FideDiff)"
SIZE_KEY, D_KEY = "fidediff_size", "fidediff_d"
DOWNSAMPLES = ["adapter", "4", "8"]
ACTIVATION_BYTES_PER_PIXEL = 4_000  # rough fp32 peak per autoencoder pixel (one UNet + ControlNet, tiled attention)
TIMESTEP = ("FLOAT", {"default": -1.0, "min": -1.0, "max": 400.0, "step": 1.0,
                      "tooltip": "The blur level used as the diffusion timestep (0..400; t = 20·(frames−1)). -1 = the estimate "
                                 "(from the kernels' blur level, or the adapter's estimator), or 200 when there is none."})
D_INPUT = (DOWNSAMPLES, {"default": "adapter", "tooltip": "Latent downsampling: 4 = the paper's full model "
           "(the image ×2 through the SD autoencoder, finer detail, ~4× the work), 8 = the fast variant. 'adapter' = what it was trained for."})
LATENT_TILE = ("INT", {"default": 128, "min": 0, "max": 1024, "step": 8, "tooltip": "UNet tiles in latent pixels (0 = whole latent). Bounds attention memory on large images."})
VAE_TILE = ("INT", {"default": 1024, "min": 0, "max": 8192, "step": 64, "tooltip": "Autoencoder tiles in its pixels (0 = whole image)."})


@dataclass
class FideDiffHandle:
    """What flows along a FIDEDIFF_MODEL link."""
    model: FideDiff
    name: str
    dtype: torch.dtype

    def bytes_for(self, height: int, width: int) -> int:
        return host.module_bytes(self.model) + ACTIVATION_BYTES_PER_PIXEL * torch.finfo(self.dtype).bits // 32 * height * width


def list_adapters() -> list[str]:
    return host.find_in_model_dirs(find_adapters) or [NO_ADAPTER]


def _downsample(handle: FideDiffHandle, choice: str) -> int:
    return handle.model.latent_downsample if choice == "adapter" else int(choice)


def _run(handle: FideDiffHandle, size: tuple[int, int], steps: int, fn):
    """``fn(model, on_step)`` with the model on the compute device, a progress bar (which checks for
    Cancel) and the model offloaded afterwards."""
    device = host.torch_device()
    host.free_memory(handle.bytes_for(*size), device)
    progress = host.Progress(steps, "FideDiff")
    model = handle.model.to(device)
    try:
        with torch.inference_mode():
            return fn(model, progress.update)
    finally:
        progress.close()
        handle.model.to(host.offload_device())
        host.soft_empty_cache()


def _check_latent(value, name: str = "latent") -> torch.Tensor:
    samples = value.get("samples") if isinstance(value, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 4 or samples.shape[1] != 4:
        got = tuple(samples.shape) if isinstance(samples, torch.Tensor) else type(value).__name__
        raise ValueError(f"{name}: expected a LATENT [batch, 4, h, w], got {got}")
    return samples


def blur_kernel_input(value: dict, kernel_size: int, image_size, latent_size, d: int, batch: int) -> tuple[torch.Tensor, list]:
    """A BLUR_KERNEL → ``k_in`` ``[batch, m², h, w]`` at latent size, and its blur levels."""
    value = check_blur_kernel(value, "blur_kernel")
    kernels = value["kernels"]
    if kernels.shape[0] not in (1, batch):
        raise ValueError(f"blur_kernel has {kernels.shape[0]} images' kernels for a batch of {batch}")
    kernels = fit_kernel_size(kernels, kernel_size).expand(batch, -1, -1, -1, -1)
    kmap = kernels.flatten(3).permute(0, 3, 1, 2)  # [B, m², gh, gw], tap index i·m + j
    levels = value.get("level") or [None] * kernels.shape[0]
    levels = (levels * batch)[:batch] if len(levels) == 1 else levels
    return kernel_input(kmap, image_size, latent_size, d), levels


class FideDiffLoader:
    DESCRIPTION = ("Loads FideDiff: your Stable Diffusion 2.1 (512, base) checkpoint plus a FideDiff adapter from "
                   "models/deblur/FideDiff/ (LoRA, Kernel ControlNet, text embedding, kernel estimator). The adapter "
                   "checks that it was trained on this base.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "base": (base_choices() or [NO_BASE], {"tooltip": "SD 2.1 from models/checkpoints (single file), models/diffusers "
                                                               "(folder) or DeblurDiff's model.pth in models/deblur."}),
            "adapter": (list_adapters(), {"tooltip": "A FideDiff adapter .safetensors (tools/train_fidediff.py writes them)."}),
            "precision": (list(host.PRECISIONS), {"default": "auto", "tooltip": "auto = fp16 on CUDA and Apple GPUs, fp32 on the CPU."}),
            "check_base": ("BOOLEAN", {"default": True, "tooltip": "Refuse a base other than the one the adapter was trained on (its fingerprint). Off at your own risk."}),
        }}

    RETURN_TYPES = ("FIDEDIFF_MODEL",)
    RETURN_NAMES = ("model",)
    OUTPUT_TOOLTIPS = ("SD 2.1 UNet with the adapter's LoRA merged, autoencoder, Kernel ControlNet and estimator.",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, base, adapter, precision="auto", check_base=True):
        if base == NO_BASE:
            raise FileNotFoundError("No Stable Diffusion 2.1 model found: put v2-1_512-ema-pruned.safetensors (or a diffusers "
                                    "folder) in ComfyUI's models/checkpoints (or models/diffusers). See the README, FideDiff.")
        if adapter == NO_ADAPTER:
            raise FileNotFoundError(f"No FideDiff adapter in {host.model_dirs() or 'models/deblur'}: train one with "
                                    "tools/train_fidediff.py and put it in models/deblur/FideDiff/. See the README.")
        dtype = host.choose_dtype(precision, "FideDiff")
        model = load_fidediff(resolve_base(base), host.resolve_model(adapter), dtype, check_base=check_base)
        return (FideDiffHandle(model.to(host.offload_device()), adapter, dtype),)


class FideDiffDeblur:
    DESCRIPTION = ("Deblurs images with FideDiff in one node: the estimator's kernels and blur level, the SD 2.1 autoencoder, "
                   "ONE UNet step at that blur level steered by the Kernel ControlNet, and decoding. Deterministic.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("FIDEDIFF_MODEL",),
            "image": ("IMAGE", {"tooltip": "The blurry image(s); any size (padded inside, cropped back)."}),
            "latent_downsample": D_INPUT,
            "timestep": TIMESTEP,
            "use_kernels": ("BOOLEAN", {"default": True, "tooltip": "Feed the estimated kernels to the Kernel ControlNet (off = the base model alone)."}),
            "latent_tile": LATENT_TILE,
            "vae_tile": VAE_TILE,
        }, "optional": {**BLEND_INPUTS}}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The deblurred image(s).",)
    FUNCTION = "deblur"
    CATEGORY = CATEGORY

    def deblur(self, model: FideDiffHandle, image, latent_downsample="adapter", timestep=-1.0, use_kernels=True,
               latent_tile=128, vae_tile=1024, mask=None, strength=1.0, feather=0):
        split = split_image(image)
        b, _, h, w = split.rgb.shape
        options = DeblurOptions(_downsample(model, latent_downsample), float(timestep), bool(use_kernels), latent_tile, vae_tile)
        options.validate()
        tile = memory.plan_tile(h, w, options.vae_tile, model.bytes_for, host.torch_device(), "FideDiff Deblur", "vae_tile", b)
        if tile != options.vae_tile:
            options.vae_tile, options.latent_tile = max(128, tile), min(options.latent_tile or 64, max(16, tile // 16))
        while True:
            try:
                restored, info = _run(model, (h, w), b * STAGES, lambda net, tick: deblur(net, split.rgb, options, tick))
                break
            except Exception as error:
                if not host.is_out_of_memory(error):
                    raise
                if options.latent_tile == 32:
                    raise
                options.latent_tile = 64 if not options.latent_tile or options.latent_tile > 64 else 32
                options.vae_tile = 512 if not options.vae_tile or options.vae_tile > 512 else 256
                log.warning("FideDiff: out of memory; retrying in %d-pixel latent tiles", options.latent_tile)
        log.info("FideDiff: timesteps %s (estimated levels %s)", info["timestep"], info["level"])
        return (blend(image, join_image(restored, split, host.output_device()), mask, strength, feather),)


class FideDiffEncode:
    DESCRIPTION = "First FideDiff stage: the blurry image's latent (posterior mean), at d = 4 (×2 upsampled) or d = 8."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("FIDEDIFF_MODEL",),
            "image": ("IMAGE", {"tooltip": "The blurry image(s)."}),
            "latent_downsample": D_INPUT,
            "vae_tile": VAE_TILE,
        }}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The blurry latent z_t (autoencoder scale), with the image size for the decoder.",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, model: FideDiffHandle, image, latent_downsample="adapter", vae_tile=1024):
        split = split_image(image)
        b, _, h, w = split.rgb.shape
        d = _downsample(model, latent_downsample)

        def run(net, tick):
            latents = []
            for single in split.rgb.split(1):
                padded, _ = pad_to_multiple(single.to(net.unet.conv_in.weight.device), net.pad_multiple(d))
                latents.append((net.encode(padded, d, tile=vae_tile) / net.latent_scale).float().cpu())
                tick()
            return torch.cat(latents)

        samples = _run(model, (h * (2 if d == 4 else 1), w * (2 if d == 4 else 1)), b, run)
        return ({"samples": samples, SIZE_KEY: [h, w], D_KEY: d},)


class KernelControlNetStep:
    DESCRIPTION = ("The one FideDiff step: ẑ0 = (z_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t at the blur level t, with the UNet steered by "
                   "the Kernel ControlNet from the blur kernels. No noise, no guidance.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("FIDEDIFF_MODEL",),
            "latent": ("LATENT", {"tooltip": "The blurry latent from FideDiff Encode."}),
            "timestep": TIMESTEP,
            "latent_tile": LATENT_TILE,
        }, "optional": {
            "blur_kernel": ("BLUR_KERNEL", {"tooltip": "Per-pixel kernels (Blur Kernel Estimate) for the Kernel ControlNet; their blur level is the timestep when it is -1."}),
        }}

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The deblurred latent ẑ0 (autoencoder scale).",)
    FUNCTION = "step"
    CATEGORY = CATEGORY

    def step(self, model: FideDiffHandle, latent, timestep=-1.0, latent_tile=128, blur_kernel=None):
        samples = _check_latent(latent)
        net = model.model
        b = samples.shape[0]
        d = int(latent.get(D_KEY, net.latent_downsample))
        image_size = tuple(latent.get(SIZE_KEY) or (samples.shape[-2] * d, samples.shape[-1] * d))
        k_in, levels = None, [None] * b
        if blur_kernel is not None and net.kcn is not None:
            m = math.isqrt(net.kcn.kernel_channels)
            k_in, levels = blur_kernel_input(blur_kernel, m, image_size, samples.shape[-2:], d, b)
        elif blur_kernel is not None:
            levels = (check_blur_kernel(blur_kernel).get("level") or [None])
            levels = (levels * b)[:b] if len(levels) == 1 else levels
        known = [lv for lv in levels if lv is not None]
        estimated = torch.tensor([float(lv) for lv in levels]) if len(known) == b else None
        t = resolve_timestep(float(timestep), estimated, b)

        def run(net, tick):
            outputs = []
            device = net.unet.conv_in.weight.device
            for i in range(b):
                k = k_in[i:i + 1].to(device) if k_in is not None else None
                z = samples[i:i + 1].to(device) * net.latent_scale
                outputs.append((net.step(z, t[i:i + 1].to(device), k, tile=latent_tile) / net.latent_scale).float().cpu())
                tick()
            return torch.cat(outputs)

        out = _run(model, (samples.shape[-2] * 8, samples.shape[-1] * 8), b, run)
        return ({**latent, "samples": out},)


class FideDiffDecode:
    DESCRIPTION = "Last FideDiff stage: decodes a latent (resized back for d = 4) and crops the padding."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("FIDEDIFF_MODEL",),
            "latent": ("LATENT", {"tooltip": "The step's output (or any FideDiff latent)."}),
            "vae_tile": VAE_TILE,
        }, "optional": {
            "image": ("IMAGE", {"tooltip": "The blurry image that was encoded: gives the output its alpha or grey layout, "
                                           "and mask and strength blend the result back into it."}),
            **BLEND_INPUTS,
        }}

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image(s).",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, model: FideDiffHandle, latent, vae_tile=1024, image=None, mask=None, strength=1.0, feather=0):
        samples = _check_latent(latent)
        if image is None and (mask is not None or float(strength) != 1.0):
            raise ValueError("FideDiff Decode: mask and strength blend the result into the blurry image; connect it to 'image'")
        split = split_image(image) if image is not None else None
        net = model.model
        d = int(latent.get(D_KEY, net.latent_downsample))
        if d not in (4, 8):
            raise ValueError(f"latent: fidediff_d must be 4 or 8, got {d}")
        h, w = latent.get(SIZE_KEY) or (samples.shape[-2] * d, samples.shape[-1] * d)

        def run(net, tick):
            images = []
            device = net.unet.conv_in.weight.device
            for single in samples.split(1):
                image = net.decode(single.to(device) * net.latent_scale, d, tile=vae_tile // 8 if vae_tile else 0)
                images.append(image[..., :h, :w].cpu())
                tick()
            return torch.cat(images)

        images = _run(model, (samples.shape[-2] * 8, samples.shape[-1] * 8), samples.shape[0], run)
        if split is None:
            return (images.permute(0, 2, 3, 1).contiguous().to(host.output_device()),)
        if tuple(split.rgb.shape[-2:]) != tuple(images.shape[-2:]) or split.rgb.shape[0] not in (1, images.shape[0]):
            raise ValueError(f"image: {tuple(image.shape)} is not the encoded image of this latent "
                             f"(decoded {images.shape[0]} x {images.shape[-2]}x{images.shape[-1]})")
        if split.rgb.shape[0] == images.shape[0]:
            return (blend(image, join_image(images, split, host.output_device()), mask, strength, feather),)
        out = images.clamp(0, 1).permute(0, 2, 3, 1).contiguous().to(host.output_device())
        return (blend(split.rgb.permute(0, 2, 3, 1), out, mask, strength, feather),)


NODE_CLASS_MAPPINGS = {
    "FideDiffLoader": FideDiffLoader,
    "FideDiffDeblur": FideDiffDeblur,
    "FideDiffEncode": FideDiffEncode,
    "KernelControlNetStep": KernelControlNetStep,
    "FideDiffDecode": FideDiffDecode,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FideDiffLoader": "FideDiff Loader",
    "FideDiffDeblur": "FideDiff Deblur (one step)",
    "FideDiffEncode": "FideDiff Encode",
    "KernelControlNetStep": "Kernel ControlNet Step (FideDiff)",
    "FideDiffDecode": "FideDiff Decode",
}
