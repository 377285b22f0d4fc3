"""Re-create example_images/ (see its README for provenance and licences).

    python tools/make_example_images.py --skimage-data PATH/skimage/data

Copies two photos from scikit-image's data folder (checked against their published SHA-256) and
blurs the cat with the pack's own Synthetic Motion Blur node, with the settings recorded below, so
the synthetic example has a known sharp original.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil

import numpy as np
import torch
from PIL import Image

from _pack import ROOT, pack_module

OUT = os.path.join(ROOT, "example_images")
COPIES = {  # skimage/data file → (our name, sha256 from skimage/data/_registry.py)
    "clock_motion.png": ("deblur_example_clock_motion.png", "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955"),
    "chelsea.png": ("deblur_example_cat_sharp.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"),
}
SYNTHETIC = ("deblur_example_cat_sharp.png", "deblur_example_cat_blurred.png",
             {"seed": 7, "intensity": 0.5, "kernel_size": 31, "noise": 0.0, "kind": "camera_shake"})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skimage-data", required=True, help="scikit-image's skimage/data folder")
    args = parser.parse_args()
    os.makedirs(OUT, exist_ok=True)
    for source, (name, digest) in COPIES.items():
        path = os.path.join(args.skimage_data, source)
        with open(path, "rb") as handle:
            if hashlib.sha256(handle.read()).hexdigest() != digest:
                raise SystemExit(f"{path} is not the published file (SHA-256 differs)")
        shutil.copyfile(path, os.path.join(OUT, name))

    sharp_name, blurred_name, settings = SYNTHETIC
    with Image.open(os.path.join(OUT, sharp_name)) as picture:
        sharp = torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255)[None]
    node = pack_module("nodes.blur_lab").SyntheticMotionBlur()
    blurred, kernel = node.blur(sharp, **settings)
    pixels = np.clip(255.0 * blurred[0].numpy(), 0, 255).astype(np.uint8)  # as SaveImage writes
    Image.fromarray(pixels).save(os.path.join(OUT, blurred_name))
    print(f"{blurred_name}: {kernel['info'][0]}")


if __name__ == "__main__":
    main()
