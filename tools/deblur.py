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
leaves no half image; outputs get the mode any new file gets (0644 under umask 022). A failure with
one file (unreadable, a decompression bomb, out of memory, anything) is reported in one line and the
batch goes on (exit status 1). Ctrl-C stops after a summary line (exit status 130). Grey, 16-bit and
RGBA images keep their form (alpha passes through untouched).

Memory follows the tile: --tile auto runs images up to 1 MP whole and larger ones in 512 px tiles,
and any tile (auto or given) is made smaller when the estimate for it does not fit in the memory
free on the device (one line says so), the same plan the WebUI's API and the nodes use.
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
MIN_TILE = 64  # net_g pads to a multiple of 8 (8x8 at its deepest level); smaller tiles are mostly overlap and padding
SEED_MAX = 0xFFFFFFFFFFFFFFFF  # the nodes' seed range (0 .. 2**64 - 1)
INTERRUPTED = 130  # the shell's status for a program stopped by Ctrl-C (128 + SIGINT)
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
    p.add_argument("--tile", default="auto", help=f"tile size in px (at least {MIN_TILE}: the network works at 1/8 scale, so smaller tiles "
                   f"are mostly overlap and padding, tens of times slower), 0 for whole images, or auto "
                   f"(whole up to 1 MP, else {AUTO_TILE}); made smaller when it would not fit in free memory")
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--seed", type=int, default=100, help=f"seed of the prior's noise (0 .. {SEED_MAX}, as the nodes)")
    return p.parse_args(argv)


def option_problem(args) -> str | None:
    """What is wrong with the options, found before any model is loaded."""
    if args.tile != "auto" and not args.tile.isdigit():
        return f"--tile must be auto, 0 or a size in pixels, not {args.tile!r}"
    tile = AUTO_TILE if args.tile == "auto" else int(args.tile)
    if 0 < tile < MIN_TILE:
        return f"--tile {tile} is too small: use 0 (whole images), auto or at least {MIN_TILE} px " \
            "(the network works at 1/8 scale; smaller tiles are mostly overlap and padding)"
    if not 0 <= args.seed <= SEED_MAX:
        return f"--seed must be between 0 and {SEED_MAX} (as the nodes), not {args.seed}"
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


def _new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0666 less the umask (read once, at start-up)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


NEW_FILE_MODE = _new_file_mode()


def save_new(image: Image.Image, target: str, overwrite: bool) -> None:
    """Write through a temporary file in the target's folder, then rename: a reader never sees half
    an image, and without ``overwrite`` an existing entry (file or link) is never replaced."""
    handle, temp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(target)), prefix=".deblur-", suffix=".tmp")
    try:
        os.chmod(temp, NEW_FILE_MODE)  # mkstemp makes 0600; an output is a normal file for whoever shares the folder
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
    tally = {"written": 0, "failed": 0, "total": None}
    started = time.perf_counter()
    try:
        return deblur_files(args, tally)
    except KeyboardInterrupt:
        if tally["total"] is None:
            print("interrupted before any image was deblurred", file=sys.stderr)
        else:
            left = tally["total"] - tally["written"] - tally["failed"]
            print(f"interrupted: {tally['written']} written, {tally['failed']} failed, {left} skipped "
                  f"of {tally['total']}, {time.perf_counter() - started:.1f} s", file=sys.stderr)
        return INTERRUPTED


def deblur_files(args, tally: dict) -> int:
    """The batch; ``tally`` counts what was written and what failed (read by Ctrl-C's summary)."""
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
    bytes_for = region_bytes(model, args.precision)
    protected = {_identity(f) for f in files}
    from tqdm.auto import tqdm

    print(f"deblurring {len(files)} image(s) with {name} on {device}", file=sys.stderr)
    tally.update(total=len(files) + len(failed), failed=len(failed))
    bar = tqdm(total=len(files), unit="image", disable=os.environ.get("DEBLUR_NO_PROGRESS") == "1")
    started = time.perf_counter()
    try:
        for file in files:
            bar.set_description(os.path.basename(file))
            try:
                image, mode, alpha = image_io.read_image_and_alpha(file)
                h, w = image.shape[-2:]
                tile = plan_tile(h, w, args.tile, bytes_for, device)
                with torch.inference_mode():
                    restored = hidiff.deblur(model, image[None].to(device), args.seed, tile if tile and (h > tile or w > tile) else 0, args.overlap)
                target = choose_target(file, args.out, args.suffix, protected, args.overwrite)
                save_new(to_picture(restored.cpu(), mode, alpha), target, args.overwrite)
            except image_io.ImageReadError as error:
                bar.write(f"skipped {error}")
                failed.append(file)
            except Exception as error:  # noqa: BLE001 (disk full, permissions, out of memory, anything: one line, go on)
                bar.write(f"failed {file}: {describe(error)}")
                failed.append(file)
            else:
                protected.add(_identity(target))
                tally["written"] += 1
                bar.write(f"{file} → {target}")
            tally["failed"] = len(failed)
            bar.update(1)
    finally:
        bar.close()
    print(f"{tally['written']} written, {len(failed)} failed, {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 1 if failed else 0


def region_bytes(model, precision: str):
    """``bytes_for(h, w)``: the estimated peak of deblurring an h x w region (weights plus activations),
    the estimate the nodes and the WebUI's API plan with."""
    methods = pack_module("models.methods")
    runtime = pack_module("models.common.runtime")
    weights = runtime.module_bytes(model)
    per_pixel = methods.hidiff_bytes_per_pixel(model) * {"fp32": 32, "fp16": 16, "bf16": 16}[precision] // 32
    return lambda h, w: weights + per_pixel * h * w


def plan_tile(height: int, width: int, option: str, bytes_for, device) -> int:
    """The tile for one image: --tile (auto: whole up to AUTO_TILE_PIXELS, else AUTO_TILE), made
    smaller by the pack's memory plan when it would not fit in free memory; MemoryLimitError (one
    failed line) when even the smallest tile does not."""
    memory = pack_module("models.common.memory")
    tile = (0 if height * width <= AUTO_TILE_PIXELS else AUTO_TILE) if option == "auto" else int(option)
    return memory.plan_tile(height, width, tile, bytes_for, device, "deblur", "--tile",
                            tiles=tuple(t for t in memory.TILES if t >= MIN_TILE))


def describe(error: BaseException) -> str:
    """One line for an unexpected error: its text (an OSError's reason), else its type's name."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = " ".join(str(error).split())[:300]
    return f"{type(error).__name__}: {text}" if text and not isinstance(error, (RuntimeError, ValueError)) else text or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
