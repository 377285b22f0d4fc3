"""Before/after figures and PSNR of an HI-Diff model on the example photos, for the README.

    python scripts/make_doc_figures.py --model PATH [--out docs/images]

PATH is an HI-Diff release folder or merged .safetensors (e.g. the default model the pack ships).
Runs the same nodes as the bundled workflows (HI-Diff Loader + Deblur, seed 100, untiled; the host
test checks that ComfyUI saves exactly what these nodes compute) on:

* the real motion-blurred clock (no sharp original exists, so no PSNR), and
* the synthetically blurred cat, measured against its sharp original with Deblur Metrics;

and draws the synthetic example's kernel with Blur Kernel Preview. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from PIL import Image

from _pack import ROOT, pack_module

os.environ.setdefault("DEBLUR_NO_PROGRESS", "1")

EXAMPLES = os.path.join(ROOT, "example_images")
SYNTHETIC_SETTINGS = {"seed": 7, "intensity": 0.5, "kernel_size": 31, "noise": 0.0, "kind": "camera_shake"}  # scripts/make_example_images.py


def load(name: str) -> torch.Tensor:
    with Image.open(os.path.join(EXAMPLES, name)) as picture:  # as ComfyUI's LoadImage reads it
        return torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255)[None]


def save(image: torch.Tensor, path: str) -> None:
    Image.fromarray(np.clip(255.0 * image[0].numpy(), 0, 255).astype(np.uint8)).save(path)  # as SaveImage


def result(output):
    return output["result"] if isinstance(output, dict) else output


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="HI-Diff release folder or .safetensors")
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "images"))
    parser.add_argument("--seed", type=int, default=100)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    hidiff = pack_module("nodes.hidiff")
    lab = pack_module("nodes.blur_lab")
    visual = pack_module("models.common.visual")

    (model,) = hidiff.HIDiffLoader().load(os.path.abspath(args.model), "fp32")
    figures = {"model": os.path.basename(os.path.normpath(args.model)), "seed": args.seed}

    def deblur(image):
        started = time.perf_counter()
        (restored,) = hidiff.HIDiffDeblur().deblur(model, image, args.seed, 0, 32)
        return restored, time.perf_counter() - started

    clock = load("deblur_example_clock_motion.png")
    clock_restored, seconds = deblur(clock)
    (comparison,) = result(lab.DeblurCompare().compare(clock, clock_restored, "side_by_side", 0.5, "real blur", "HI-Diff"))
    save(comparison, os.path.join(args.out, "before_after_real_clock.png"))
    figures["clock"] = {"size": list(clock.shape[1:3]), "seconds": round(seconds, 2)}

    blurred, sharp = load("deblur_example_cat_blurred.png"), load("deblur_example_cat_sharp.png")
    cat_restored, seconds = deblur(blurred)
    metrics = lab.DeblurMetrics()
    _, _, psnr_blurry, ssim_blurry = metrics.measure(blurred, sharp)
    _, _, psnr_restored, ssim_restored = metrics.measure(cat_restored, sharp)
    panels = [blurred[0].permute(2, 0, 1), cat_restored[0].permute(2, 0, 1), sharp[0].permute(2, 0, 1)]
    labels = [f"synthetic blur {psnr_blurry:.2f} dB", f"HI-Diff {psnr_restored:.2f} dB", "sharp original"]
    sheet = visual.side_by_side(panels, labels)
    save(sheet.permute(1, 2, 0)[None], os.path.join(args.out, "before_after_synthetic_cat.png"))
    figures["cat"] = {"size": list(blurred.shape[1:3]), "seconds": round(seconds, 2),
                      "psnr_blurry": round(psnr_blurry, 2), "ssim_blurry": round(ssim_blurry, 4),
                      "psnr_restored": round(psnr_restored, 2), "ssim_restored": round(ssim_restored, 4)}

    _, kernel = lab.SyntheticMotionBlur().blur(sharp, **SYNTHETIC_SETTINGS)
    (picture,) = result(lab.BlurKernelPreview().preview(kernel, 256))
    save(picture, os.path.join(args.out, "kernel_synthetic_cat.png"))

    with open(os.path.join(args.out, "doc_figures.json"), "w", encoding="utf-8") as handle:
        json.dump(figures, handle, indent=2)
    cat = figures["cat"]
    print(f"| photo | blurry PSNR / SSIM | {figures['model']} PSNR / SSIM | CPU seconds |")
    print("|---|---|---|---|")
    print(f"| synthetic (cat, {cat['size'][1]}×{cat['size'][0]}) | {cat['psnr_blurry']:.2f} dB / {cat['ssim_blurry']:.4f} "
          f"| {cat['psnr_restored']:.2f} dB / {cat['ssim_restored']:.4f} | {cat['seconds']} |")
    print(f"| real (clock, {figures['clock']['size'][1]}×{figures['clock']['size'][0]}) | no sharp original | — | {figures['clock']['seconds']} |")


if __name__ == "__main__":
    main()
