"""Re-measure the bundled model's quality as its model card reports it.

    python tools/prepare_default_data.py --skimage scikit_image-0.26.0-*.whl --out /tmp/default_data
    python bench/eval_default_model.py /tmp/default_data/eval /tmp/default_eval [--model default|PATH]

1. tools/evaluate.py on the held-out images (never used in training), blurred with kernel seed 0 twice:
   in linear light (gamma 2.2, as optics blur) and in the stored sRGB values (as software blurs),
   against the blind Wiener baseline (told the set's gamma) and Wiener with the true kernel;
2. sharp photos in: PSNR of the output against the input, and the mean colour change per channel
   (8-bit levels), on the held-out photos and on flat patches (greys and colours);
3. the quickstart's example cat against its sharp original, and a before/after of the real
   camera-shake clock (OUT/clock_before_after.png).
Prints one markdown summary (also OUT/report.md).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

from _cli import load_model, resolve_model  # noqa: E402
from _pack import pack_module  # noqa: E402

SETS = {"linear light (gamma 2.2)": 2.2, "sRGB values (gamma 1)": 1.0}
BLUR = ["--seed", "0", "--kernel-size", "21", "--intensity", "0.2", "1.0", "--noise", "0", "0.01"]
SHEET = ["--sheet-height", "160", "--sheet-names", "coffee.png", "rocket.png", "camera.png",
         "dead_leaves_0120.png", "dead_leaves_0123.png"]
PHOTOS = ("coffee.png", "rocket.png", "camera.png")
FLAT_LEVELS = ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), (0.75, 0.75, 0.75), (0.8, 0.3, 0.2), (0.2, 0.4, 0.7))
EXAMPLES = os.path.join(ROOT, "example_images")


def run_sets(eval_dir: str, out: str, model: str) -> dict[str, list[dict]]:
    results = {}
    for label, gamma in SETS.items():
        folder = os.path.join(out, "linear" if gamma != 1 else "srgb")
        command = [sys.executable, os.path.join(ROOT, "tools", "evaluate.py"), "--sharp", eval_dir, "--out", folder,
                   "--model", model, "--baseline", "blind-wiener", "--baseline", "oracle-wiener", "--gamma", str(gamma),
                   "--baseline-gamma", str(gamma), *BLUR, *SHEET]
        if subprocess.call(command) != 0:
            raise SystemExit(f"error: {' '.join(command)} failed")
        with open(os.path.join(folder, "summary.json")) as handle:
            results[label] = json.load(handle)["methods"]
    return results


def colour_change(model, image: torch.Tensor, metrics, deblur) -> tuple[float, list[float]]:
    """(PSNR of the output against the input, mean change per channel in 8-bit levels)."""
    with torch.inference_mode():
        out = deblur(model, image[None], 100).float().clamp(0, 1)
    a, b = metrics.to_8bit(out), metrics.to_8bit(image[None])
    return float(metrics.psnr(a, b)[0]), [float(v) for v in (a - b).mean(dim=(0, 2, 3)) * 255]


def sharp_checks(model, eval_dir: str) -> dict:
    metrics, image_io = pack_module("models.common.metrics"), pack_module("models.common.image_io")
    deblur = pack_module("models.hidiff").deblur
    photos = {}
    for name in PHOTOS:
        photos[name] = colour_change(model, image_io.read_image(os.path.join(eval_dir, name)), metrics, deblur)
    flats = {}
    for rgb in FLAT_LEVELS:
        patch = torch.tensor(rgb, dtype=torch.float32)[:, None, None].expand(3, 96, 96).contiguous()
        flats["rgb " + "/".join(str(round(v * 255)) for v in rgb)] = colour_change(model, patch, metrics, deblur)[1]
    return {"photos": photos, "flats": flats}


def example_checks(model, out: str) -> dict:
    metrics, image_io, visual = (pack_module(f"models.common.{m}") for m in ("metrics", "image_io", "visual"))
    deblur = pack_module("models.hidiff").deblur
    blurred = image_io.read_image(os.path.join(EXAMPLES, "deblur_example_cat_blurred.png"))
    sharp = image_io.read_image(os.path.join(EXAMPLES, "deblur_example_cat_sharp.png"))
    clock = image_io.read_image(os.path.join(EXAMPLES, "deblur_example_clock_motion.png"))
    with torch.inference_mode():
        cat = deblur(model, blurred[None], 100).float().clamp(0, 1)
        fixed = deblur(model, clock[None], 100).float().clamp(0, 1)
    score = lambda x: float(metrics.psnr(metrics.to_8bit(x), metrics.to_8bit(sharp[None]))[0])
    grid = [[visual.label(clock, "camera shake (real)", "bottom-left"), visual.label(fixed[0], "bundled model", "bottom-left")]]
    visual.save_png(visual.contact_sheet(grid, ["before", "after"], height=300), os.path.join(out, "clock_before_after.png"))
    image_io.save_png(cat[0], os.path.join(out, "cat_restored.png"))
    return {"cat_blurred_db": score(blurred[None]), "cat_restored_db": score(cat)}


def report(sets: dict, sharp: dict, examples: dict, model: str) -> str:
    lines = [f"Model: {model}", ""]
    for label, methods in sets.items():
        lines += [f"Held-out set, blur in {label}: {methods[0]['images']} images", "",
                  "| method | PSNR dB | gain dB | SSIM | s / image |", "|---|---|---|---|---|"]
        lines += [f"| {m['method']} | {m['psnr']:.2f} | {m['gain_db']:+.2f} | {m['ssim']:.3f} | {m['seconds']:.2f} |" for m in methods]
        lines.append("")
    lines += ["Sharp photos in (output against input; mean change per channel R/G/B in 8-bit levels):", "",
              "| photo | PSNR dB | mean change R/G/B |", "|---|---|---|"]
    for name, (db, change) in sharp["photos"].items():
        lines.append(f"| {name} | {db:.2f} | {' / '.join(f'{c:+.2f}' for c in change)} |")
    worst = max(abs(c) for _, change in sharp["photos"].values() for c in change)
    lines += ["", f"Largest mean channel change on sharp photos: {worst:.2f} levels", "",
              "Flat patches 96x96 (mean change R/G/B, levels): " + "; ".join(
                  f"{k}: {' / '.join(f'{c:+.2f}' for c in v)}" for k, v in sharp["flats"].items()),
              f"Largest on flat patches: {max(abs(c) for v in sharp['flats'].values() for c in v):.2f} levels", "",
              f"Example cat against its sharp original: blurred {examples['cat_blurred_db']:.2f} dB, "
              f"restored {examples['cat_restored_db']:.2f} dB ({examples['cat_restored_db'] - examples['cat_blurred_db']:+.2f} dB)"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("eval_dir", help="held-out sharp images (tools/prepare_default_data.py's eval/)")
    p.add_argument("out", help="output folder")
    p.add_argument("--model", default="default", help="'default' (the bundled model), a name or a path")
    p.add_argument("--skip-sets", action="store_true", help="only the sharp-photo and example checks (fast)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    sets = {} if args.skip_sets else run_sets(args.eval_dir, args.out, args.model)
    name, path = resolve_model(args.model)
    model = load_model(path, torch.device("cpu"))
    text = report(sets, sharp_checks(model, args.eval_dir), example_checks(model, args.out), name)
    with open(os.path.join(args.out, "report.md"), "w") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
