"""Deblur image files with a pack model (the bundled default model unless --model names another).

    python tools/deblur.py photo.jpg                    # → photo_deblurred.png beside it
    python tools/deblur.py shots/ "more/*.png" --out results/
    python tools/deblur.py big.png --model HI_Diff_GoPro --tile 512 --device cuda

Inputs: files, folders (their images; --recursive for sub-folders) and glob patterns. Folders and
patterns take regular files that are images by name and by content (a README beside the photos is
left alone); a file named explicitly that cannot be read is reported and sets exit status 1.
Outputs are PNG, beside each input as NAME_deblurred.png or in --out as NAME.png. No file is ever
replaced unless --overwrite is given (a free name NAME_2.png ... is taken instead), an input never
(compared as files, so links, hard links and case-insensitive names cannot trick it), and nothing is
written through a link. Each image is written to a temporary file and renamed, so an interrupted run
leaves no half image. A failure with one file is reported in one line and the batch goes on. Grey,
16-bit and RGBA images keep their form (alpha passes through untouched).
"""
from __future__ import annotations

import argparse
import errno
import glob
import os
import sys
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from _cli import load_model, pick_device, resolve_model
from _pack import pack_module

AUTO_TILE = 512
AUTO_TILE_PIXELS = 1024 * 1024  # above this, --tile auto works in AUTO_TILE px tiles (memory follows the tile)
GREY_MODES = ("L", "LA", "1", "P;L")
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("inputs", nargs="+", help="image files, folders or glob patterns")
    p.add_argument("--model", default=None, help="'default' (bundled), a name under the model folders, or a path")
    p.add_argument("--out", help="output folder (default: beside each input)")
    p.add_argument("--suffix", default="_deblurred", help="added to the name when writing beside the input")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never an input)")
    p.add_argument("--recursive", action="store_true", help="look into sub-folders of folder inputs")
    p.add_argument("--tile", default="auto", help="tile size in px, 0 for whole images, or auto (whole up to 1 MP, else 512)")
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--seed", type=int, default=100, help="seed of the prior's noise")
    return p.parse_args(argv)


def option_problem(args) -> str | None:
    """What is wrong with the options, found before any model is loaded."""
    if args.tile != "auto" and not args.tile.isdigit():
        return f"--tile must be auto, 0 or a size in pixels, not {args.tile!r}"
    tile = AUTO_TILE if args.tile == "auto" else int(args.tile)
    if args.overlap < 0 or (tile and args.overlap >= tile):
        return f"--overlap ({args.overlap}) must be at least 0 and smaller than the tile ({tile} px" + \
            (", the size --tile auto uses on large images)" if args.tile == "auto" else ")")
    if args.out is None and not args.suffix:
        return "writing beside the inputs needs a --suffix (inputs are never overwritten)"
    if args.out is not None:
        if os.path.lexists(args.out) and not os.path.isdir(args.out):
            return f"--out {args.out} exists and is not a folder"
        try:
            os.makedirs(args.out, exist_ok=True)
        except OSError as error:
            return f"--out {args.out}: cannot create the folder ({error.strerror})"
        if not os.access(args.out, os.W_OK | os.X_OK):
            return f"--out {args.out}: the folder is not writable"
    return None


def expand_inputs(patterns: list[str], recursive: bool, suffix: str) -> tuple[list[str], list[str], list[str]]:
    """(files to deblur in order without duplicates, named inputs that failed, notes on what was left out)."""
    image_io = pack_module("models.common.image_io")
    files, failed, notes, seen = [], [], [], set()
    for pattern in patterns:
        if os.path.isdir(pattern):
            found = [f for f in image_io.list_images(pattern, recursive)
                     if not (suffix and os.path.splitext(os.path.basename(f))[0].endswith(suffix))]
            found = _images_only(found, notes, image_io)
        elif os.path.lexists(pattern):  # named explicitly
            if not image_io.is_image_name(pattern):
                notes.append(f"left out {pattern}: not an image file (by its name)")
                continue
            found = [pattern]
        else:
            matches = sorted(f for f in glob.glob(pattern, recursive=True) if image_io.is_image_name(f))
            found = _images_only([f for f in matches if image_io.is_regular_file(f)], notes, image_io)
            if not matches:
                failed.append(pattern)
                notes.append(f"{pattern}: no such file, folder or matching image")
        for f in found:
            key = _identity(f)
            if key not in seen:
                seen.add(key)
                files.append(f)
    return files, failed, notes


def _images_only(paths: list[str], notes: list[str], image_io) -> list[str]:
    kept = []
    for path in paths:
        if image_io.looks_like_image(path):
            kept.append(path)
        else:
            notes.append(f"left out {path}: named like an image but its content is not one")
    return kept


def _identity(path: str):
    """The file itself (device, inode), so links, hard links and case variants compare equal."""
    try:
        info = os.stat(path)
        return info.st_dev, info.st_ino
    except OSError:
        return os.path.normcase(os.path.realpath(path))


def choose_target(path: str, out: str | None, suffix: str, protected: set, overwrite: bool) -> str:
    """An output path that is not an input nor written earlier in this run, and does not exist
    yet (or, with ``overwrite``, is an existing regular file)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = out if out else os.path.dirname(path)
    name = stem + ("" if out else suffix)
    n = 1
    while True:
        target = os.path.join(folder, (name if n == 1 else f"{name}_{n}") + ".png")
        n += 1
        if not os.path.lexists(target):
            return target
        if overwrite and not os.path.islink(target) and os.path.isfile(target) and _identity(target) not in protected:
            return target


def to_picture(rgb: torch.Tensor, mode: str, alpha) -> Image.Image:
    """The result in the input's form: grey stays grey, 16-bit stays 16-bit, alpha is put back."""
    pixels = rgb[0].float().clamp(0, 1).permute(1, 2, 0).numpy()
    if mode in SIXTEEN_BIT_MODES:
        return Image.fromarray((pixels.mean(-1) * 65535).round().astype(np.uint16))
    image = Image.fromarray((pixels * 255).round().astype(np.uint8))
    if mode in GREY_MODES:
        image = image.convert("L")
    if alpha is not None:
        image.putalpha(Image.fromarray(alpha))
    return image


def save_new(image: Image.Image, target: str, overwrite: bool) -> None:
    """Write through a temporary file in the target's folder, then rename: a reader never sees half
    an image, and without ``overwrite`` an existing entry (file or link) is never replaced."""
    handle, temp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(target)), prefix=".deblur-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            image.save(stream, format="PNG")
        if overwrite:
            os.replace(temp, target)
            return
        try:
            os.link(temp, target)  # fails if the name exists: no replacing, even in a race
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV) or os.path.lexists(target):
                raise
            os.replace(temp, target)  # a file system without hard links
            return
        os.unlink(temp)
    except BaseException:
        if os.path.lexists(temp):
            os.unlink(temp)
        raise


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = option_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    hidiff = pack_module("models.hidiff")
    image_io = pack_module("models.common.image_io")
    files, failed, notes = expand_inputs(args.inputs, args.recursive, args.suffix)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    if not files:
        print("error: no images to deblur", file=sys.stderr)
        return 2
    device = pick_device(args.device)
    name, path = resolve_model(args.model)
    model = load_model(path, device, args.precision)
    protected = {_identity(f) for f in files}
    written = 0
    from tqdm.auto import tqdm

    print(f"deblurring {len(files)} image(s) with {name} on {device}", file=sys.stderr)
    bar = tqdm(total=len(files), unit="image", disable=os.environ.get("DEBLUR_NO_PROGRESS") == "1")
    started = time.perf_counter()
    for file in files:
        bar.set_description(os.path.basename(file))
        try:
            image, mode, alpha = image_io.read_image_and_alpha(file)
            h, w = image.shape[-2:]
            tile = (0 if h * w <= AUTO_TILE_PIXELS else AUTO_TILE) if args.tile == "auto" else int(args.tile)
            with torch.inference_mode():
                restored = hidiff.deblur(model, image[None].to(device), args.seed, tile if tile and (h > tile or w > tile) else 0, args.overlap)
            target = choose_target(file, args.out, args.suffix, protected, args.overwrite)
            save_new(to_picture(restored.cpu(), mode, alpha), target, args.overwrite)
        except image_io.ImageReadError as error:
            bar.write(f"skipped {error}")
            failed.append(file)
        except (OSError, RuntimeError, ValueError) as error:  # disk full, permissions, out of memory ...
            detail = error.strerror if isinstance(error, OSError) and error.strerror else " ".join(str(error).split())
            bar.write(f"failed {file}: {detail or type(error).__name__}")
            failed.append(file)
        else:
            protected.add(_identity(target))
            written += 1
            bar.write(f"{file} → {target}")
        bar.update(1)
    bar.close()
    print(f"{written} written, {len(failed)} failed, {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
