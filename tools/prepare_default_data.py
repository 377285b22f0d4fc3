"""Build the training and held-out image folders of the pack's default model, offline:

* openly licensed photos bundled with scikit-image (public domain or CC0, listed below), read
  straight from its wheel or installed ``skimage/data`` folder (scikit-image is not needed at run
  time and need not be installed: ``pip download --no-deps scikit-image`` gives the wheel);
* procedurally generated dead-leaves images (models/blur/dead_leaves.py), seeded.

    python tools/prepare_default_data.py --skimage scikit_image-*.whl --out /data/default
    # → /data/default/train/*.png, /data/default/eval/*.png, /data/default/manifest.json
"""
from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zipfile

from PIL import Image

from _pack import pack_module

# name: licence, as stated in scikit-image's data module
PHOTOS = {
    "astronaut.png": "public domain (NASA)", "brick.png": "CC0 (CC0Textures)", "camera.png": "CC0 (Lav Varshney)",
    "chelsea.png": "CC0 (Stefan van der Walt)", "coffee.png": "CC0 (Rachel Michetti)", "coins.png": "no known copyright restrictions",
    "grass.png": "CC0 (CC0Textures)", "gravel.png": "CC0 (CC0Textures)", "hubble_deep_field.jpg": "public domain (NASA)",
    "rocket.jpg": "public domain (SpaceX)", "text.png": "public domain", "cell.png": "CC0", "retina.jpg": "CC0",
    "ihc.png": "no known copyright restrictions",
}
HELD_OUT = ("coffee.png", "rocket.jpg", "camera.png")


def read_photos(source: str) -> dict[str, Image.Image]:
    photos = {}
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            for name in PHOTOS:
                photos[name] = Image.open(io.BytesIO(wheel.read(f"skimage/data/{name}"))).convert("RGB")
    else:
        for name in PHOTOS:
            photos[name] = Image.open(os.path.join(source, name)).convert("RGB")
    return photos


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skimage", required=True, help="scikit-image wheel (.whl) or its skimage/data folder")
    parser.add_argument("--out", required=True)
    parser.add_argument("--dead-leaves", type=int, default=120, help="dead-leaves images for training")
    parser.add_argument("--dead-leaves-eval", type=int, default=8, help="dead-leaves images held out")
    parser.add_argument("--size", type=int, default=256, help="side of the dead-leaves images")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)
    blur = pack_module("models.blur")
    torch = __import__("torch")
    image_io = pack_module("models.common.image_io")
    train, held = os.path.join(args.out, "train"), os.path.join(args.out, "eval")
    os.makedirs(train, exist_ok=True)
    os.makedirs(held, exist_ok=True)
    manifest = {"train": [], "eval": []}
    for name, image in read_photos(args.skimage).items():
        split = "eval" if name in HELD_OUT else "train"
        target = os.path.join(held if split == "eval" else train, os.path.splitext(name)[0] + ".png")
        image.save(target)
        manifest[split].append({"file": os.path.basename(target), "source": f"scikit-image data/{name}", "licence": PHOTOS[name],
                                "size": list(image.size)})
    total = args.dead_leaves + args.dead_leaves_eval
    for i in range(total):
        split = "train" if i < args.dead_leaves else "eval"
        seed = args.seed * 10_000 + i
        name = f"dead_leaves_{i:04d}.png"
        path = os.path.join(train if split == "train" else held, name)
        if not os.path.exists(path):  # deterministic, so files from an interrupted run are kept
            image_io.save_png(blur.dead_leaves(args.size, torch.Generator().manual_seed(seed)), path + ".tmp.png")
            os.replace(path + ".tmp.png", path)
        manifest[split].append({"file": name, "source": f"models/blur/dead_leaves.py seed {seed}", "licence": "generated",
                                "size": [args.size, args.size]})
        print(f"\rdead leaves {i + 1}/{total}", end="", file=sys.stderr)
    print(file=sys.stderr)
    with open(os.path.join(args.out, "manifest.json"), "w") as handle:
        json.dump(manifest, handle, indent=1)
    print(f"{len(manifest['train'])} training and {len(manifest['eval'])} held-out images in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
