"""Blur Kernel Deconvolve with the true kernel (the oracle) on the example cat: PSNR before/after for
camera shake and linear motion, blurred in stored values and in linear light, light noise.

    python bench/eval_deconvolution.py
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from _pack import pack_module  # noqa: E402

blur = pack_module("models.blur")
kd = pack_module("models.classical.kernel_deconvolution")
metrics = pack_module("models.common.metrics")
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def main() -> None:
    torch.set_num_threads(1)
    photo = np.asarray(Image.open(os.path.join(ROOT, "example_images", "deblur_example_cat_sharp.png")).convert("RGB"))
    sharp = torch.from_numpy(photo.copy()).float().div(255).permute(2, 0, 1)[None]
    print(f"example cat {sharp.shape[-1]}x{sharp.shape[-2]}, kernel 31 px, intensity 0.6, noise 0.005, seed 3")
    for kind in ("camera_shake", "linear"):
        for gamma in (1.0, 2.2):
            settings = blur.BlurSettings(kind=kind, kernel_size=31, intensity=0.6, noise=0.005, gamma=gamma)
            blurred, kernel = blur.synthesize(sharp, settings, torch.Generator().manual_seed(3))
            before = float(metrics.psnr(blurred, sharp).mean())
            for method in kd.METHODS:
                for strength in (1e-3, 3e-3, 1e-2, 3e-2):
                    start = time.perf_counter()
                    out = kd.deconvolve(blurred, kernel, kd.DeconvolutionSettings(strength=strength, gamma=gamma, method=method))
                    seconds = time.perf_counter() - start
                    after = float(metrics.psnr(out, sharp).mean())
                    print(f"{kind:12s} {'linear light' if gamma != 1 else 'stored values':13s} {method:15s} {strength:<6g} "
                          f"{before:6.2f} -> {after:6.2f} dB ({after - before:+.2f}) {seconds:5.2f} s")


if __name__ == "__main__":
    main()
