"""Build the training and held-out image folders of the pack's default model, offline:

* openly licensed photos bundled with scikit-image (public domain or CC0, listed below), read
  straight from its wheel or installed ``skimage/data`` folder (scikit-image is not needed at run
  time and need not be installed: ``pip download --no-deps scikit-image`` gives the wheel);
* procedurally generated dead-leaves images (models/blur/dead_leaves.py), seeded;
* optionally (``--debian DIR`` of .deb files, from ``apt-get download plasma-workspace-wallpapers
  mate-backgrounds``) the photographs among Debian's desktop backgrounds (GPL/LGPL/CC BY-SA, each
  recorded in the manifest), scaled to 1024 px on the long side.

    python tools/prepare_default_data.py --skimage scikit_image-*.whl --out /data/default
    # → /data/default/train/*.png, /data/default/eval/*.png, /data/default/manifest.json
"""
from __future__ import annotations

import argparse
import glob
import io
import json
import os
import sys
import tarfile
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

# Debian package: {path in the package: licence (author)}; only photographs, no drawings or renders.
_PLASMA = "usr/share/wallpapers/{}/contents/images/{}"
_MATE = "usr/share/backgrounds/mate/nature/{}.jpg"
DEBIAN_PHOTOS = {
    "plasma-workspace-wallpapers": {
        _PLASMA.format("BytheWater", "2560x1600.jpg"): "LGPL-3 (Maciej Wiklo)",
        _PLASMA.format("ColdRipple", "2560x1600.jpg"): "LGPL-3 (Risto Saukonpää)",
        _PLASMA.format("ColorfulCups", "2560x1600.jpg"): "LGPL-3 (Dmitri Popov)",
        _PLASMA.format("DarkestHour", "2560x1600.jpg"): "LGPL-3 (Risto Saukonpää)",
        _PLASMA.format("EveningGlow", "2560x1600.jpg"): "LGPL-3 (Ian Hex)",
        _PLASMA.format("FallenLeaf", "2560x1600.jpg"): "LGPL-3 (Martin Klapetek)",
        _PLASMA.format("Grey", "2560x1600.jpg"): "LGPL-3 (Sigi Sagi)",
        _PLASMA.format("Kite", "2560x1600.jpg"): "LGPL-3 (Risto Saukonpää)",
        _PLASMA.format("MilkyWay", "5120x2880.png"): "CC BY-SA 4.0 (ruvkr)",
        _PLASMA.format("OneStandsOut", "2560x1600.jpg"): "LGPL-3 (Risto Saukonpää)",
        _PLASMA.format("Path", "2560x1600.jpg"): "LGPL-3 (Risto Saukonpää)",
        _PLASMA.format("Volna", "5120x2880.jpg"): "CC BY-SA 4.0 (Nikita Babin)",
        _PLASMA.format("summer_1am", "2560x1600.jpg"): "LGPL-3 (Risto Saukonpää)",
    },
    "mate-backgrounds": {
        _MATE.format("Aqua"): "GPL-2+ (Charles Barbin)", _MATE.format("Blinds"): "GPL-2+ (Lennart Poettering, Andrea Cimitan)",
        _MATE.format("Dune"): "GPL-2+ (Marco Cogoni, Hylke Bons)", _MATE.format("FreshFlower"): "GPL-2+ (Jens Ansorg)",
        _MATE.format("Garden"): "GPL-2+ (Charles Barbin)", _MATE.format("GreenMeadow"): "GPL-2+ (Timothy Schellhase, Lapo Calamandrei)",
        _MATE.format("LadyBird"): "GPL-2+ (Charles Barbin)", _MATE.format("RainDrops"): "GPL-2+ (blackcombwhistler07)",
        _MATE.format("Storm"): "GPL-2+ (Sergey Nazarov)", _MATE.format("TwoWings"): "GPL-2+ (Charles Barbin, Hylke Bons)",
        _MATE.format("Wood"): "GPL-2+ (Jean-François Fortin Tam)", _MATE.format("YellowFlower"): "GPL-2+ (Charles Barbin)",
    },
}
DEBIAN_SIDE = 1024


def deb_members(path: str, wanted: set[str]) -> dict[str, bytes]:
    """The ``wanted`` files of a .deb (an ar archive holding data.tar.*), read without dpkg."""
    found = {}
    with open(path, "rb") as handle:
        if handle.read(8) != b"!<arch>\n":
            raise ValueError(f"{path}: not a Debian package (no ar header)")
        while header := handle.read(60):
            name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
            data = handle.read(size + size % 2)[:size]
            if name.startswith("data.tar"):
                with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                    for member in tar.getmembers():
                        key = member.name.lstrip("./")
                        if key in wanted and member.isfile():
                            found[key] = tar.extractfile(member).read()
    return found


def read_debian_photos(folder: str) -> dict[str, tuple[Image.Image, str, str]]:
    """{file name: (image scaled to DEBIAN_SIDE, source, licence)} from the .deb files in ``folder``."""
    photos = {}
    for package, files in DEBIAN_PHOTOS.items():
        debs = sorted(glob.glob(os.path.join(folder, f"{package}_*.deb")))
        if not debs:
            raise FileNotFoundError(f"{folder}: no {package}_*.deb (apt-get download {package})")
        members = deb_members(debs[-1], set(files))
        for inner, licence in files.items():
            if inner not in members:
                raise FileNotFoundError(f"{debs[-1]}: has no {inner}")
            image = Image.open(io.BytesIO(members[inner])).convert("RGB")
            image.thumbnail((DEBIAN_SIDE, DEBIAN_SIDE), Image.Resampling.LANCZOS)
            parts = inner.split("/")
            stem = parts[3] if package.startswith("plasma") else os.path.splitext(parts[-1])[0]
            photos[f"{package.split('-')[0]}_{stem}.png"] = (image, f"Debian {os.path.basename(debs[-1])}: {inner}", licence)
    return photos


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
    parser.add_argument("--debian", help="folder with plasma-workspace-wallpapers_*.deb and mate-backgrounds_*.deb: "
                                         "add their photographs to train/")
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
    for name, (image, source, licence) in (read_debian_photos(args.debian) if args.debian else {}).items():
        image.save(os.path.join(train, name))
        manifest["train"].append({"file": name, "source": source, "licence": licence, "size": list(image.size)})
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
