"""Blur lab nodes: make blur (SyntheticMotionBlur), look at kernels (BlurKernelPreview), undo a known or
estimated blur (BlurKernelDeconvolve), measure a restoration (DeblurMetrics) and compare two images
(DeblurCompare).

``BLUR_KERNEL`` links carry the dict documented in ``models/blur/blur_kernel.py``: ``kernels``
``[B, gh, gw, k, k]`` (non-negative, each sums to 1, centre at k//2, convolution orientation), ``level``
(B blur levels or None) and ``info`` (B JSON-safe dicts).
"""
from __future__ import annotations

import torch

from ..models.blur import BlurSettings, check_blur_kernel, synthesize
from ..models.blur.preview import preview
from ..models.classical.kernel_deconvolution import METHODS, DeconvolutionSettings, deconvolve, total_windows
from ..models.common.metrics import mean_finite, psnr, ssim, to_8bit
from ..models.common.visual import error_heatmap, side_by_side, split_view
from . import host
from .images import join_image, split_image
from .compare_ui import compare_ui  # frontend before/after viewer (issue 5)
from .kernel_ui import kernel_ui

CATEGORY = "deblur/blur lab"


def _to_image(rgb: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` → IMAGE ``[B, H, W, 3]`` on the host's output device."""
    b, _, h, w = rgb.shape  # one copy (a preview may be hundreds of MB), never into the caller's tensor
    image = torch.empty((b, h, w, 3), dtype=rgb.dtype, device=rgb.device).copy_(rgb.permute(0, 2, 3, 1)).clamp_(0, 1)
    return image.to(host.output_device())


def _pairs(a: torch.Tensor, b: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Match batch sizes: equal, or one of them a single image used for every image of the other."""
    if a.shape[0] != b.shape[0]:
        if 1 not in (a.shape[0], b.shape[0]):
            raise ValueError(f"{what}: batches of {a.shape[0]} and {b.shape[0]} images cannot be paired (use equal batches or one image)")
        n = max(a.shape[0], b.shape[0])
        a, b = a.expand(n, *a.shape[1:]), b.expand(n, *b.shape[1:])
    return a, b


class SyntheticMotionBlur:
    DESCRIPTION = ("Blurs a sharp image with a random camera-shake trajectory (Boracchi & Foi 2012) or a straight line, "
                   "seeded, and returns the kernel used. Each image of a batch gets its own kernel. For training pairs "
                   "and for testing deblurring where the truth is known.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The sharp image(s) to blur."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 0xFFFFFFFFFFFFFFFF, "control_after_generate": True,
                                 "tooltip": "Fixes the trajectory (and the noise): the same seed gives the same blur."}),
                "intensity": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01,
                                        "tooltip": "Blur extent: the trajectory reaches intensity x (kernel size - 1) / 2 pixels from its centre. 0 = no blur."}),
                "kernel_size": ("INT", {"default": 31, "min": 3, "max": 255, "step": 2,
                                        "tooltip": "Side of the (odd) kernel in pixels: the largest blur possible."}),
                "noise": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 0.2, "step": 0.001,
                                    "tooltip": "Standard deviation of Gaussian sensor noise added after blurring (0..1 image units; 0.01 ≈ 2.5 levels of 255)."}),
            },
            "optional": {
                "kind": (["camera_shake", "linear"], {"default": "camera_shake", "tooltip": "camera_shake: a random hand-held trajectory; linear: uniform motion along a random direction."}),
                "regions": ("INT", {"default": 1, "min": 1, "max": 4, "tooltip": "Spatially varying blur: a regions x regions grid of different kernels blended smoothly over the image. 1 = one kernel."}),
                "camera_gamma": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 3.0, "step": 0.1, "tooltip": "Camera response: blur in linear light with this gamma (2.2 ≈ sRGB; highlights smear into bright streaks). 1 = blur the stored values."}),
                "jpeg_quality": ("INT", {"default": 0, "min": 0, "max": 100, "tooltip": "Save through JPEG at this quality after blurring. 0 = no JPEG."}),
            },
        }

    RETURN_TYPES = ("IMAGE", "BLUR_KERNEL")
    RETURN_NAMES = ("blurred", "kernel")
    OUTPUT_TOOLTIPS = ("The blurred image(s).", "The kernel(s) used, one per image; view them with Blur Kernel Preview.")
    FUNCTION = "blur"
    CATEGORY = CATEGORY

    def blur(self, image, seed, intensity, kernel_size, noise, kind="camera_shake", regions=1, camera_gamma=1.0, jpeg_quality=0):
        split = split_image(image)
        settings = BlurSettings(kind=kind, kernel_size=kernel_size, intensity=intensity, grid=regions, noise=noise,
                                gamma=camera_gamma, jpeg_quality=jpeg_quality)
        generator = torch.Generator().manual_seed(int(seed))
        blurred, blur_kernel = synthesize(split.rgb, settings, generator)
        for info in blur_kernel["info"]:
            info["seed"] = int(seed)
        return join_image(blurred, split, host.output_device()), blur_kernel


class BlurKernelPreview:
    DESCRIPTION = "Draws blur kernels large and readable: each scaled to its peak, enlarged with crisp pixels, in heat colours, with a caption. A spatially varying kernel is drawn as its grid."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "kernel": ("BLUR_KERNEL", {"tooltip": "Kernels from Synthetic Motion Blur (or any node producing BLUR_KERNEL)."}),
            "size": ("INT", {"default": 256, "min": 32, "max": 2048, "step": 8, "tooltip": "Side of each kernel's picture in pixels."}),
        }}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("preview",)
    OUTPUT_TOOLTIPS = ("One picture per kernel of the batch.",)
    FUNCTION = "preview"
    OUTPUT_NODE = True  # shows the kernels on the node even when the picture goes nowhere
    CATEGORY = CATEGORY

    def preview(self, kernel, size=256):
        kernel = check_blur_kernel(kernel, "kernel")
        # the IMAGE for the graph, and the kernels themselves for the frontend to draw on the node
        return {"ui": kernel_ui(kernel), "result": (_to_image(preview(kernel, size)),)}


class DeblurMetrics:
    DESCRIPTION = ("Measures a restored image against the sharp reference: PSNR (dB) and SSIM per image and their mean, "
                   "plus a heat-map of where the error is. Connect the blurry input too to see whether deblurring helped: "
                   "its scores and the gain are reported beside the restored ones. Measured on 8-bit values, as saved "
                   "images and papers are.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "restored": ("IMAGE", {"tooltip": "The image to judge (e.g. the deblurred output)."}),
            "reference": ("IMAGE", {"tooltip": "The sharp ground truth, same size."}),
            "heatmap_scale": ("FLOAT", {"default": 0.25, "min": 0.01, "max": 1.0, "step": 0.01, "tooltip": "Error (0..1 units) shown brightest in the heat-map."}),
        }, "optional": {
            "blurry": ("IMAGE", {"tooltip": "Optional: the blurry input the restored image came from, same size. "
                                            "Its PSNR/SSIM are the baseline; the report then shows the gain."}),
        }}

    RETURN_TYPES = ("STRING", "IMAGE", "FLOAT", "FLOAT", "FLOAT")
    RETURN_NAMES = ("report", "error_map", "psnr", "ssim", "gain_db")
    OUTPUT_TOOLTIPS = ("PSNR/SSIM per image and mean, as text (with the blurry input's and the gain when connected).",
                       "Per-pixel error heat-map (dark = equal).", "Mean PSNR of the restored image in dB.",
                       "Mean SSIM of the restored image.",
                       "Mean PSNR gain in dB of restored over blurry (0 when no blurry image is connected).")
    FUNCTION = "measure"
    CATEGORY = CATEGORY

    def measure(self, restored, reference, heatmap_scale=0.25, blurry=None):
        a, b = split_image(restored, "restored").rgb, split_image(reference, "reference").rgb
        _same_size(a, b, "restored")
        c = None if blurry is None else split_image(blurry, "blurry").rgb
        if c is not None:
            _same_size(c, b, "blurry")
            a, c = _pairs(a, c, "DeblurMetrics")
        a, b = _pairs(a, b, "DeblurMetrics")
        p, s = _scores(a, b)
        mean_p, mean_s = mean_finite(p), mean_finite(s)
        if c is None:
            lines = [f"image {i}: PSNR {pi:.2f} dB  SSIM {si:.4f}" for i, (pi, si) in enumerate(zip(p, s))]
            if len(p) > 1:
                lines.append(f"mean: PSNR {mean_p:.2f} dB  SSIM {mean_s:.4f}")
            lines.append("(connect the blurry input to see the gain)")
            gain = 0.0
        else:
            bp, bs = _scores(c.expand_as(a), b)
            lines = [f"image {i}: blurry {x:.2f} dB / {xs:.4f} -> restored {y:.2f} dB / {ys:.4f}  gain {y - x:+.2f} dB, SSIM {ys - xs:+.4f}"
                     for i, (x, xs, y, ys) in enumerate(zip(bp, bs, p, s))]
            mean_bp, mean_bs = mean_finite(bp), mean_finite(bs)
            gain = mean_finite([y - x for x, y in zip(bp, p)])
            if len(p) > 1:
                lines.append(f"mean: blurry {mean_bp:.2f} dB / {mean_bs:.4f} -> restored {mean_p:.2f} dB / {mean_s:.4f}  "
                             f"gain {gain:+.2f} dB, SSIM {mean_s - mean_bs:+.4f}")
            lines.append("deblurring helped" if gain > 0 else "deblurring did not help (the restored image scores lower than the blurry one)")
        return "\n".join(lines), _to_image(error_heatmap(a, b, heatmap_scale)), mean_p, mean_s, gain


def _same_size(a: torch.Tensor, reference: torch.Tensor, name: str) -> None:
    if a.shape[-2:] != reference.shape[-2:]:
        raise ValueError(f"{name} is {a.shape[-1]}x{a.shape[-2]} but reference is {reference.shape[-1]}x{reference.shape[-2]}; they must be the same size")


def _scores(a: torch.Tensor, b: torch.Tensor) -> tuple[list[float], list[float]]:
    """8-bit PSNR and SSIM per image (SSIM NaN below its 11-pixel window)."""
    a8, b8 = to_8bit(a), to_8bit(b)
    p = psnr(a8, b8).tolist()
    return p, (ssim(a8, b8).tolist() if min(a.shape[-2:]) >= 11 else [float("nan")] * len(p))


class DeblurCompare:
    DESCRIPTION = "Puts two images together to compare them: side by side, or split in one frame at a chosen position, with labels."

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image_a": ("IMAGE", {"tooltip": "Left image (e.g. the blurry input)."}),
            "image_b": ("IMAGE", {"tooltip": "Right image (e.g. the deblurred output). Resized to image_a's height if needed."}),
            "mode": (["side_by_side", "split"], {"default": "side_by_side", "tooltip": "side_by_side: two panels; split: one frame, image_a left of the divider and image_b right of it."}),
            "split_position": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Where the divider sits in split mode (fraction of the width)."}),
            "label_a": ("STRING", {"default": "before", "tooltip": "Caption of image_a (empty: none)."}),
            "label_b": ("STRING", {"default": "after", "tooltip": "Caption of image_b (empty: none)."}),
        }}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("comparison",)
    OUTPUT_TOOLTIPS = ("The composite, one per pair of the batch.",)
    FUNCTION = "compare"
    OUTPUT_NODE = True  # issue 5: the node shows an interactive before/after viewer even when its output goes nowhere
    CATEGORY = CATEGORY

    def compare(self, image_a, image_b, mode="side_by_side", split_position=0.5, label_a="before", label_b="after"):
        a, b = _pairs(split_image(image_a, "image_a").rgb, split_image(image_b, "image_b").rgb, "DeblurCompare")
        if mode == "split":
            out = [split_view(x, y, split_position, (label_a, label_b)) for x, y in zip(a, b)]
        elif mode == "side_by_side":
            out = [side_by_side([x, y], [label_a, label_b]) for x, y in zip(a, b)]
        else:
            raise ValueError(f"unknown mode {mode!r}; use side_by_side or split")
        # issue 5: the first pair, unchanged, for the frontend's interactive before/after viewer
        return {"ui": compare_ui(image_a, image_b, (label_a, label_b)), "result": (_to_image(torch.stack(out)),)}


COLOUR_SPACES = {"linear light (photos)": 2.2, "stored values": 1.0}


class BlurKernelDeconvolve:
    DESCRIPTION = ("Undoes a blur by its BLUR_KERNEL, in closed form (no learning): Synthetic Motion Blur's true kernel "
                   "(the oracle), Blur Kernel Estimate's per-pixel estimate or DeblurDiff's LKPN kernels. Spatially varying "
                   "kernels are solved region by region with their local kernel; memory follows the tile.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE", {"tooltip": "The blurred image(s)."}),
            "kernel": ("BLUR_KERNEL", {"tooltip": "The blur to undo: one kernel set per image, or one for the whole batch."}),
            "method": (list(METHODS), {"default": "total_variation", "tooltip": "wiener: one FFT solve, fastest; total_variation: a few "
                                       "half-quadratic steps that keep edges and flatten the noise Wiener amplifies (better on noisy photos)."}),
            "strength": ("FLOAT", {"default": 0.001, "min": 0.0001, "max": 1.0, "step": 0.0001, "tooltip": "Regularisation: higher is "
                                   "smoother and safer against noise and kernel errors, lower is sharper with more ringing."}),
            "colour_space": (list(COLOUR_SPACES), {"default": "linear light (photos)", "tooltip": "Where the blur happened: in "
                             "linear light (real camera blur, gamma 2.2) or in the stored values (blur made by editing software)."}),
            "tile_size": ("INT", {"default": 512, "min": 0, "max": 8192, "step": 32, "tooltip": "Window side in pixels (memory follows "
                          "it); 0 = the whole image at once when the kernel is uniform. Below 32 px is refused."}),
        }}

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("deconvolved",)
    OUTPUT_TOOLTIPS = ("The image(s) with the kernel's blur undone; alpha passes through.",)
    FUNCTION = "deconvolve"
    CATEGORY = CATEGORY

    def deconvolve(self, image, kernel, method="total_variation", strength=0.001, colour_space="linear light (photos)", tile_size=512):
        if colour_space not in COLOUR_SPACES:
            raise ValueError(f"unknown colour space {colour_space!r}; use one of {', '.join(COLOUR_SPACES)}")
        split = split_image(image)
        settings = DeconvolutionSettings(strength=float(strength), gamma=COLOUR_SPACES[colour_space], tile=int(tile_size), method=method)
        b, _, h, w = split.rgb.shape
        progress = host.Progress(total_windows(kernel, b, h, w, settings), "deconvolve")  # checks Cancel every window
        try:
            restored = deconvolve(split.rgb, kernel, settings, progress.update)
        finally:
            progress.close()
        return (join_image(restored, split, host.output_device()),)


NODE_CLASS_MAPPINGS = {
    "SyntheticMotionBlur": SyntheticMotionBlur,
    "BlurKernelPreview": BlurKernelPreview,
    "DeblurMetrics": DeblurMetrics,
    "DeblurCompare": DeblurCompare,
    "BlurKernelDeconvolve": BlurKernelDeconvolve,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SyntheticMotionBlur": "Synthetic Motion Blur",
    "BlurKernelPreview": "Blur Kernel Preview",
    "DeblurMetrics": "Deblur Metrics (PSNR / SSIM)",
    "DeblurCompare": "Deblur Compare",
    "BlurKernelDeconvolve": "Blur Kernel Deconvolve",
}
