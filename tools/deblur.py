"""Deblur image files with a pack model (the bundled default model unless --model names another).

    python tools/deblur.py photo.jpg                    # → photo_deblurred.png beside it
    python tools/deblur.py shots/ "more/*.png" --out results/
    python tools/deblur.py big.png --model HI_Diff_GoPro --tile 512 --device cuda

Inputs: files, folders (their images; --recursive for sub-folders) and glob patterns. Outputs are
PNG, beside each input as NAME_deblurred.png or in --out as NAME.png; an input file is never
overwritten, and a folder's existing *_deblurred.png files are not taken as inputs. Images that
cannot be read are reported and skipped (exit status 1 if any was). Grey and RGBA images keep their
mode (alpha passes through untouched).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
import time

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from _cli import load_model, pick_device, resolve_model
from _pack import pack_module

AUTO_TILE_PIXELS = 1024 * 1024  # above this, --tile auto works in 512 px tiles (memory follows the tile)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--model", default=None, help="'default' (bundled), a name under the model folders, or a path")
    p.add_argument("--out", help="output folder (default: beside each input)")
    p.add_argument("--suffix", default="_deblurred", help="added to the name when writing beside the input")
    p.add_argument("--recursive", action="store_true", help="look into sub-folders of folder inputs")
    p.add_argument("--tile", default="auto", help="tile size in px, 0 for whole images, or auto (whole up to 1 MP, else 512)")
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--seed", type=int, default=100, help="seed of the prior's noise")
    return p.parse_args(argv)


def expand_inputs(patterns: list[str], recursive: bool, suffix: str) -> tuple[list[str], list[str]]:
    """(image files in order without duplicates, patterns that matched nothing)."""
    image_io = pack_module("models.common.image_io")
    files, missing = [], []
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = [f for f in image_io.list_images(pattern, recursive)
                     if not (suffix and os.path.splitext(os.path.basename(f))[0].endswith(suffix))]
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            found = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
        if not found:
            missing.append(pattern)
        for f in found:
            if os.path.abspath(f) not in {os.path.abspath(x) for x in files}:
                files.append(f)
    return files, missing


def output_path(path: str, out: str | None, suffix: str, taken: set[str]) -> str:
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = out if out else os.path.dirname(path)
    name = stem + ("" if out else suffix)
    target = os.path.join(folder, name + ".png")
    n = 2
    while os.path.abspath(target) in taken:
        target = os.path.join(folder, f"{name}_{n}.png")
        n += 1
    return target


def read(path: str):
    """(RGB ``[1, 3, H, W]``, PIL mode, alpha array or None)."""
    with Image.open(path) as image:
        image.load()
        mode = image.mode
        alpha = np.asarray(image.getchannel("A")) if "A" in image.getbands() else None
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None], mode, alpha


def write(rgb: torch.Tensor, mode: str, alpha, path: str) -> None:
    array = (rgb[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    image = Image.fromarray(array)
    if mode in ("L", "LA", "I", "I;16", "1"):  # grey in, grey out
        image = image.convert("L")
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha))
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    image.save(path)


def main(argv=None) -> int:
    args = parse_args(argv)
    hidiff = pack_module("models.hidiff")
    files, missing = expand_inputs(args.inputs, args.recursive, args.suffix)
    for pattern in missing:
        print(f"warning: {pattern}: no such file, folder or matching image", file=sys.stderr)
    if not files:
        print("error: no images to deblur", file=sys.stderr)
        return 2
    if args.out is None and not args.suffix:
        print("error: writing beside the inputs needs a --suffix (inputs are never overwritten)", file=sys.stderr)
        return 2
    if args.tile != "auto" and (not args.tile.isdigit() or (int(args.tile) and args.overlap >= int(args.tile))):
        print(f"error: --tile must be auto, 0 or a size larger than --overlap ({args.overlap})", file=sys.stderr)
        return 2
    device = pick_device(args.device)
    name, path = resolve_model(args.model)
    model = load_model(path, device, args.precision)
    inputs = {os.path.abspath(f) for f in files}
    taken = set(inputs)
    failed, written = [], 0
    from tqdm.auto import tqdm

    print(f"deblurring {len(files)} image(s) with {name} on {device}", file=sys.stderr)
    bar = tqdm(total=len(files), unit="image", disable=os.environ.get("DEBLUR_NO_PROGRESS") == "1")
    started = time.perf_counter()
    for file in files:
        bar.set_description(os.path.basename(file))
        try:
            image, mode, alpha = read(file)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
            bar.write(f"skipped {file}: not a readable image ({' '.join(str(error).split()) or type(error).__name__})")
            failed.append(file)
            bar.update(1)
            continue
        h, w = image.shape[-2:]
        tile = (0 if h * w <= AUTO_TILE_PIXELS else 512) if args.tile == "auto" else int(args.tile)
        target = output_path(file, args.out, args.suffix, taken)
        if os.path.abspath(target) in inputs:  # cannot happen with the naming above; kept as a guard
            bar.write(f"skipped {file}: its output would overwrite an input")
            failed.append(file)
            continue
        with torch.inference_mode():
            restored = hidiff.deblur(model, image.to(device), args.seed, tile if tile and (h > tile or w > tile) else 0, args.overlap)
        write(restored.float().cpu(), mode, alpha, target)
        taken.add(os.path.abspath(target))
        written += 1
        bar.write(f"{file} → {target}")
        bar.update(1)
    bar.close()
    print(f"{written} written, {len(failed)} skipped, {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
