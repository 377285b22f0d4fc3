"""Measure deblurring: pack models and classical baselines over a paired folder or a synthetic set.

    # held-out sharp images, blurred on the fly with kernels from a fixed seed
    python tools/evaluate.py --sharp photos/ --out eval/ --model default --baseline blind-wiener --baseline oracle-wiener
    # a GoPro / RealBlur test folder (input/ + target/)
    python tools/evaluate.py --paired GoPro/test --out eval/ --model HI_Diff_GoPro --tile 512

Writes OUT/per_image.csv, OUT/summary.md (+ summary.json) and OUT/contact_sheet.png
(blurry | each method | sharp, first rows). PSNR/SSIM are measured on 8-bit values (as saved PNGs);
"blurry" is the input itself, the reference point for the gain.

Baselines: blind-wiener (kernel estimated from the blurry image, Cho & Lee style, then Wiener with a
gradient prior in linear light), oracle-wiener / oracle-rl (the true kernel; synthetic sets only: an
upper bound for classical deconvolution, not a fair competitor).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import torch

from _cli import PeakMemory, load_model, pick_device, resolve_model
from _pack import pack_module

BASELINES = ("blind-wiener", "oracle-wiener", "oracle-rl")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    data = p.add_mutually_exclusive_group(required=True)
    data.add_argument("--paired", help="folder with input/ and target/")
    data.add_argument("--sharp", help="folder of sharp images, blurred on the fly with fixed-seed kernels")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", action="append", default=[], help="pack model: 'default', a name in the model folders or a path (repeatable)")
    p.add_argument("--baseline", action="append", default=[], choices=BASELINES, help="classical baseline (repeatable)")
    p.add_argument("--count", type=int, default=0, help="use the first N images (0: all)")
    p.add_argument("--crop", type=int, default=0, help="central square crop of each image (0: whole images)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--tile", type=int, default=0, help="tile size for the models (0: whole image)")
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--model-seed", type=int, default=100, help="seed of HI-Diff's prior noise")
    p.add_argument("--sheet-rows", type=int, default=6, help="images shown in the contact sheet")
    p.add_argument("--sheet-names", nargs="*", default=None, help="show these images (file names) instead of the first ones")
    p.add_argument("--sheet-height", type=int, default=192)
    p.add_argument("--save-images", action="store_true", help="also write every restored image")
    blur = p.add_argument_group("synthetic set (--sharp)")
    blur.add_argument("--seed", type=int, default=0, help="kernel seed of the set (image i uses (seed, i))")
    blur.add_argument("--kind", default="camera_shake", choices=("camera_shake", "linear"))
    blur.add_argument("--kernel-size", type=int, default=21)
    blur.add_argument("--intensity", type=float, nargs=2, default=(0.2, 1.0))
    blur.add_argument("--noise", type=float, nargs=2, default=(0.0, 0.01))
    blur.add_argument("--gamma", type=float, default=2.2)
    blur.add_argument("--jpeg", type=int, default=0)
    blur.add_argument("--regions", type=int, default=1)
    cl = p.add_argument_group("classical baselines")
    cl.add_argument("--baseline-kernel-size", type=int, default=0, help="kernel size the blind baseline estimates (default: --kernel-size)")
    cl.add_argument("--baseline-gamma", type=float, default=2.2, help="camera response the baselines assume")
    return p.parse_args(argv)


def load_pairs(args, blur):
    datasets = blur.datasets
    if args.paired:
        folder = datasets.PairedFolder(args.paired)
        indices = range(min(len(folder), args.count) if args.count else len(folder))
        for i in indices:
            pair = folder[i]
            if args.crop:
                pair = datasets.Pair(pair.name, *(center_crop(x, args.crop) for x in (pair.blurry, pair.sharp)))
            yield pair
        return
    settings = blur.BlurSettings(kind=args.kind, kernel_size=args.kernel_size, intensity=tuple(args.intensity),
                                 noise=tuple(args.noise), gamma=args.gamma, jpeg_quality=args.jpeg, grid=args.regions)
    for n, pair in enumerate(datasets.synthetic_pairs(datasets.SharpFolder(args.sharp), settings, args.seed, args.crop)):
        if args.count and n >= args.count:
            return
        yield pair


def center_crop(x, size):
    h, w = x.shape[-2:]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return x[..., top:top + size, left:left + size]


class Method:
    def __init__(self, name, run, needs_kernel=False):
        self.name, self.run, self.needs_kernel = name, run, needs_kernel


def build_methods(args, device):
    hidiff = pack_module("models.hidiff")
    classical = pack_module("models.classical")
    methods = [Method("blurry", lambda pair: pair.blurry[None])]
    for spec in args.model:
        name, path = resolve_model(spec)
        model = load_model(path, device, args.precision)

        def run(pair, model=model):
            with torch.inference_mode():
                out = hidiff.deblur(model, pair.blurry[None].to(device), args.model_seed, args.tile, args.overlap)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return out.cpu()

        methods.append(Method(name, run))
    k_size = args.baseline_kernel_size or args.kernel_size
    gamma = args.baseline_gamma
    blur = pack_module("models.blur")
    for spec in args.baseline:
        if spec == "blind-wiener":
            methods.append(Method("blind Wiener (estimated kernel)", lambda pair: classical.blind_deblur(pair.blurry[None], k_size, gamma=gamma)[0]))
        elif spec in ("oracle-wiener", "oracle-rl"):
            def run(pair, spec=spec):
                kernels = pair.kernel["kernels"]
                linear = blur.to_linear(pair.blurry[None].double(), gamma)
                if kernels.shape[1:3] != (1, 1):
                    raise SystemExit("error: oracle baselines need uniform blur (--regions 1)")
                k = kernels[0, 0, 0]
                out = classical.wiener_deconvolve(linear, k, 1e-2) if spec == "oracle-wiener" else classical.richardson_lucy(linear, k, 30)
                return blur.from_linear(out.clamp(0, 1), gamma).float()
            methods.append(Method("Wiener (true kernel)" if spec == "oracle-wiener" else "Richardson-Lucy (true kernel)", run, needs_kernel=True))
    return methods


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.paired and any(b.startswith("oracle") for b in args.baseline):
        print("error: oracle baselines need the true kernel: use a synthetic set (--sharp)", file=sys.stderr)
        return 2
    blur = pack_module("models.blur")
    pack_module("models.blur.datasets")
    metrics = pack_module("models.common.metrics")
    visual = pack_module("models.common.visual")
    image_io = pack_module("models.common.image_io")
    device = pick_device(args.device)
    methods = build_methods(args, device)
    memory = PeakMemory(device)
    os.makedirs(args.out, exist_ok=True)
    rows, sheet = [], []
    pairs = list(load_pairs(args, blur))
    if not pairs:
        print("error: no images to evaluate", file=sys.stderr)
        return 2
    for method in methods[1:]:  # warm-up (first-call allocations, kernel selection) outside the timings
        method.run(type(pairs[0])(pairs[0].name, center_crop(pairs[0].blurry, 64), center_crop(pairs[0].sharp, 64),
                                  pairs[0].kernel))
    from tqdm.auto import tqdm

    for index, pair in enumerate(tqdm(pairs, desc="evaluating", disable=os.environ.get("DEBLUR_NO_PROGRESS") == "1")):
        sharp8 = metrics.to_8bit(pair.sharp[None])
        outputs = []
        for method in methods:
            memory.reset()
            started = time.perf_counter()
            restored = method.run(pair).float().clamp(0, 1)
            seconds = time.perf_counter() - started
            peak = memory.peak_mib()
            restored8 = metrics.to_8bit(restored)
            rows.append({"image": pair.name, "method": method.name, "psnr": float(metrics.psnr(restored8, sharp8)[0]),
                         "ssim": float(metrics.ssim(restored8, sharp8)[0]) if min(sharp8.shape[-2:]) >= 11 else float("nan"),
                         "seconds": seconds, "peak_mib": peak, "height": pair.sharp.shape[-2], "width": pair.sharp.shape[-1]})
            outputs.append((method.name, restored[0], rows[-1]["psnr"]))
            if args.save_images and method.name != "blurry":
                safe = method.name.replace("/", "_").replace(" ", "_")
                image_io.save_png(restored[0], os.path.join(args.out, "images", safe, os.path.splitext(pair.name)[0] + ".png"))
        shown = pair.name in args.sheet_names if args.sheet_names else index < args.sheet_rows
        if shown:
            sheet.append(outputs + [("sharp", pair.sharp, None)])
    write_outputs(args, methods, rows, sheet, memory.label, visual, metrics)
    return 0


def write_outputs(args, methods, rows, sheet, memory_label, visual, metrics):
    with open(os.path.join(args.out, "per_image.csv"), "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    blurry = {r["image"]: r["psnr"] for r in rows if r["method"] == "blurry"}
    summary = []
    for method in methods:
        mine = [r for r in rows if r["method"] == method.name]
        summary.append({
            "method": method.name, "images": len(mine),
            "psnr": metrics.mean_finite([r["psnr"] for r in mine]),
            "gain_db": metrics.mean_finite([r["psnr"] - blurry[r["image"]] for r in mine]),
            "ssim": metrics.mean_finite([r["ssim"] for r in mine]),
            "seconds": sum(r["seconds"] for r in mine) / len(mine),
            "peak_mib": max(r["peak_mib"] for r in mine),
        })
    source = f"paired folder {args.paired}" if args.paired else (
        f"synthetic set from {args.sharp}: {args.kind} kernels {args.kernel_size}px, intensity {args.intensity}, "
        f"noise {args.noise}, gamma {args.gamma}, seed {args.seed}")
    lines = [f"Data: {source}; {summary[0]['images']} images" + (f", central {args.crop}px crops" if args.crop else ""), "",
             f"| method | PSNR dB | gain dB | SSIM | s / image | {memory_label} |", "|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['method']} | {s['psnr']:.2f} | {s['gain_db']:+.2f} | {s['ssim']:.4f} | {s['seconds']:.2f} | {s['peak_mib']:.0f} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "summary.md"), "w") as handle:
        handle.write(text)
    with open(os.path.join(args.out, "summary.json"), "w") as handle:
        json.dump({"data": source, "methods": summary}, handle, indent=1)
    if sheet:
        labels = [name for name, _, _ in sheet[0]]
        grid = [[visual.label(image, f"{value:.2f} dB" if value is not None else "", "bottom-left") for _, image, value in row]
                for row in sheet]
        visual.save_png(visual.contact_sheet(grid, labels, height=args.sheet_height), os.path.join(args.out, "contact_sheet.png"))
    print(text)
    print(f"wrote {args.out}/per_image.csv, summary.md, summary.json, contact_sheet.png")


if __name__ == "__main__":
    sys.exit(main())
