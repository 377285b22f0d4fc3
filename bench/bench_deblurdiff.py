"""DeblurDiff speed and peak memory per image size.

    python bench/bench_deblurdiff.py [--weights models/deblur/DeblurDiff/model.pth] [--config full|reduced]
                                     [--sizes 512 1024] [--steps 50] [--measure-steps 2]
                                     [--device cpu|cuda|mps] [--dtype fp32|fp16|bf16] [--tiled] [--threads N]

Each size runs in its own process, so peak memory is that run's alone (peak RSS on the CPU,
``torch.cuda.max_memory_allocated`` on CUDA). Without ``--weights`` the networks get synthetic
weights: ``full`` is the official architecture (1.7 B parameters), ``reduced`` keeps the official
autoencoder and text encoder but shrinks the three UNets (64-channel UNet/ControlNet, 32-channel
LKPN) so a CPU finishes in minutes. Only ``--measure-steps`` sampling steps are run; seconds per image
are extrapolated to ``--steps`` from the measured text encoding, image encoding, mean step and decoding
times (they do not depend on the weights' values). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import replace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools")]
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def full_config():
    from _pack import pack_module

    sd21 = pack_module("models.sd21")
    dd = pack_module("models.deblurdiff")
    unet = sd21.UNetConfig(4, 4, 320, (1, 2, 4, 4), 2, (True, True, True, False), (1, 1, 1, 1), 1024, True)
    return dd.DeblurDiffConfig(unet=unet, controlnet=replace(unet, in_channels=12, out_channels=0),
                               lkpn=replace(unet, in_channels=8, out_channels=100, model_channels=128),
                               vae=sd21.VAEConfig(), text_encoder=sd21.TextEncoderConfig())


def reduced_config():
    config = full_config()
    unet = replace(config.unet, model_channels=64)
    return replace(config, unet=unet, controlnet=replace(unet, in_channels=12, out_channels=0),
                   lkpn=replace(config.lkpn, model_channels=32))


def child(args) -> dict:
    import torch
    from _pack import pack_module

    dd = pack_module("models.deblurdiff")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, DTYPES[args.dtype])
    device = torch.device(args.device)
    started = time.perf_counter()
    if args.weights:
        model = dd.load_deblurdiff(args.weights, dtype)
    else:
        torch.manual_seed(0)
        model = dd.DeblurDiff(full_config() if args.config == "full" else reduced_config()).to(dtype).eval().requires_grad_(False)
    load_seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters())
    model.to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    size = args.child
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    options = dd.SamplingOptions(steps=args.measure_steps, tiled=args.tiled)
    marks = []

    def mark():
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks.append(time.perf_counter())

    mark()
    dd.deblur(model, image, options, 0, device, on_step=mark)
    mark()
    text = marks[1] - marks[0]  # text + image encoding happen before the first mark of deblur
    steps = [b - a for a, b in zip(marks[1:-3], marks[2:-2])]  # marks: start, encoded, each step, decoded, end
    decode = marks[-2] - marks[-3]
    per_step = sum(steps) / len(steps)
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"size": size, "parameters": parameters, "load_s": load_seconds, "encode_s": text, "step_s": per_step,
            "decode_s": decode, "total_s": text + decode + per_step * args.steps, "peak_bytes": peak,
            "weights_bytes": parameters * torch.finfo(dtype).bits // 8}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="official model.pth or converted .safetensors (default: synthetic weights)")
    parser.add_argument("--config", choices=["full", "reduced"], default="reduced", help="architecture of the synthetic weights")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--steps", type=int, default=50, help="steps to extrapolate seconds per image to")
    parser.add_argument("--measure-steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--tiled", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    rows = []
    for size in args.sizes:
        command = [sys.executable, os.path.abspath(__file__), "--child", str(size)] + [
            a for a in (argv if argv is not None else sys.argv[1:])]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            print(result.stderr[-2000:], file=sys.stderr)
            rows.append({"size": size, "error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"})
            continue
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    what = args.weights or f"synthetic {args.config} architecture"
    print(f"DeblurDiff on {args.device} ({args.dtype}{', tiled' if args.tiled else ''}), {what}; "
          f"{args.measure_steps} steps measured, seconds per image extrapolated to {args.steps} steps\n")
    print("| size | parameters | s/step | encode+text s | decode s | s/image | peak memory | of which weights |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| {row['size']}² | — | — | — | — | failed: {row['error']} | — | — |")
            continue
        print(f"| {row['size']}² | {row['parameters'] / 1e9:.2f} B | {row['step_s']:.2f} | {row['encode_s']:.2f} | "
              f"{row['decode_s']:.2f} | {row['total_s']:.0f} | {row['peak_bytes'] / 2**30:.1f} GiB | {row['weights_bytes'] / 2**30:.1f} GiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
