"""Before/after figures and PSNR of an HI-Diff model on the example photos, for the README.

    python tools/make_doc_figures.py --model PATH [--out docs/images]

PATH is an HI-Diff release folder or merged .safetensors (e.g. the default model the pack ships).
Runs the same nodes as the bundled workflows (HI-Diff Loader + Deblur, seed 100, untiled; the host
test checks that ComfyUI saves exactly what these nodes compute) on:

* the real motion-blurred clock (no sharp original exists, so no PSNR), and
* the synthetically blurred cat, measured against its sharp original with Deblur Metrics;

and draws the synthetic example's kernel with Blur Kernel Preview. Prints the README section
(a table and the figures); ``--write-docs`` also puts it into docs/frontend.md.
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
START_MARK, END_MARK = "<!-- results: start -->", "<!-- results: end -->"
SYNTHETIC_SETTINGS = {"seed": 7, "intensity": 0.5, "kernel_size": 31, "noise": 0.0, "kind": "camera_shake"}  # tools/make_example_images.py


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
    parser.add_argument("--write-docs", action="store_true", help="put the results into docs/frontend.md (with --out docs/images)")
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
    section = results_section(figures)
    print(section)
    if args.write_docs:
        write_section(section)


def results_section(figures: dict) -> str:
    cat, clock = figures["cat"], figures["clock"]
    return "\n".join([
        f"Model `{figures['model']}`, seed {figures['seed']}, untiled, fp32, on the CPU "
        f"(`tools/make_doc_figures.py`, the nodes the workflows run):",
        "",
        "| photo | blurry: PSNR / SSIM | restored: PSNR / SSIM | seconds |",
        "|---|---|---|---|",
        f"| synthetic blur (cat, {cat['size'][1]}×{cat['size'][0]}) | {cat['psnr_blurry']:.2f} dB / {cat['ssim_blurry']:.4f} "
        f"| {cat['psnr_restored']:.2f} dB / {cat['ssim_restored']:.4f} | {cat['seconds']} |",
        f"| real blur (clock, {clock['size'][1]}×{clock['size'][0]}) | no sharp original exists | — | {clock['seconds']} |",
        "",
        "![Synthetic blur: blurred, restored, sharp original](images/before_after_synthetic_cat.png)",
        "",
        "![Its kernel, drawn by Blur Kernel Preview](images/kernel_synthetic_cat.png)",
        "",
        "![Real blur: the clock photo, restored](images/before_after_real_clock.png)",
    ])


def write_section(section: str, doc: str = os.path.join(ROOT, "docs", "frontend.md")) -> None:
    """Replace the text between the results markers of docs/frontend.md."""
    with open(doc, encoding="utf-8") as handle:
        text = handle.read()
    start, end = text.index(START_MARK) + len(START_MARK), text.index(END_MARK)
    with open(doc, "w", encoding="utf-8") as handle:
        handle.write(text[:start] + "\n" + section + "\n" + text[end:])


if __name__ == "__main__":
    main()
