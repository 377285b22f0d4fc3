"""OSDD speed and peak memory per image size, with the columns of the one-step table (FideDiff/DeblurDiff).

    python bench/bench_osdd.py [--config full|reduced] [--sizes 512x512 1280x720] [--device cpu|cuda]
                               [--dtype fp32|fp16|bf16] [--tiled] [--threads N]

Weights are synthetic (seeded): ``full`` is SD 2.1-base's UNet (865 M) and autoencoder (84 M) plus OSDD's
parts (skip blocks, two rank-4 UNet LoRAs unmerged, encoder LoRA merged, gate); ``reduced`` shrinks the UNet
to 64 channels for a quick CPU run. Times do not depend on the weights' values. Each size runs in its own
process so its peak memory is its own (peak RSS on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA).
One UNet evaluation per image; the stages are timed separately. Prints a Markdown table.
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


def build(config: str, dtype):
    import torch
    from _pack import pack_module

    sd21 = pack_module("models.sd21")
    osdd = pack_module("models.osdd")
    unet_config = sd21.UNetConfig(4, 4, 320, (1, 2, 4, 4), 2, (True, True, True, False), (1, 1, 1, 1), 1024, True)
    if config == "reduced":
        unet_config = replace(unet_config, model_channels=64)
    torch.manual_seed(0)
    unet, vae = sd21.build_unet(unet_config), sd21.AutoencoderKL(sd21.VAEConfig())
    base = sd21.SDBase(unet.eval(), vae.eval(), unet_config, sd21.VAEConfig(), "epsilon", "synthetic", "synthetic")
    model = osdd.OSDD.fresh(base, vae_rank=4)
    lora = pack_module("models.sd21.lora")
    lora.merge_adapters(model.evae.vae)  # as load_osdd does
    lora.unwrap_lora(model.evae.vae)
    return model.to(dtype).eval().requires_grad_(False)


def child(args) -> dict:
    import torch
    from _pack import pack_module

    osdd = pack_module("models.osdd")
    padding = pack_module("models.common.padding")
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, DTYPES[args.dtype])
    device = torch.device(args.device)
    started = time.perf_counter()
    model = build(args.config, dtype).to(device)
    load_seconds = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters())
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    width, height = map(int, args.child.split("x"))
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0)).to(device)
    tiling = osdd.Tiling(512, 256) if args.tiled else None
    times = {}

    def timed(name, fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times[name] = time.perf_counter() - start
        return out

    with torch.inference_mode():
        padded, size = padding.pad_to_multiple(image, model.pad_multiple)
        latent, skips = timed("encode_s", lambda: model.encode(padded, tiling))
        gamma = timed("gate_s", lambda: model.gamma_from(skips))
        sharp = timed("step_s", lambda: model.step(latent, gamma, tiling=tiling))
        timed("decode_s", lambda: padding.crop_to(model.decode(sharp, skips, tiling), size))
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    skip_bytes = sum(f.numel() * f.element_size() for f in skips.features)
    return {"size": args.child, "parameters": parameters, "load_s": load_seconds, **times,
            "total_s": sum(times.values()), "peak_bytes": peak, "skip_bytes": skip_bytes,
            "weights_bytes": parameters * torch.finfo(dtype).bits // 8}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=["full", "reduced"], default="full")
    parser.add_argument("--sizes", nargs="+", default=["512x512", "1280x720"], help="WIDTHxHEIGHT")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--tiled", action="store_true", help="512 px tiles, stride 256, for every stage")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    rows = []
    for size in args.sizes:
        command = [sys.executable, os.path.abspath(__file__), "--child", size] + list(argv if argv is not None else sys.argv[1:])
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode:
            print(result.stderr[-2000:], file=sys.stderr)
            rows.append({"size": size, "error": result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"})
            continue
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    print(f"OSDD on {args.device} ({args.dtype}{', tiled' if args.tiled else ''}), synthetic {args.config} SD 2.1 weights; "
          f"1 UNet evaluation per image\n")
    print("| method | size | parameters | network evaluations | encode s | step s | decode s | s/image | peak memory | of which skips |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "error" in row:
            print(f"| OSDD | {row['size']} | — | 1 | — | — | — | failed: {row['error']} | — | — |")
            continue
        print(f"| OSDD | {row['size']} | {row['parameters'] / 1e9:.2f} B | 1 | {row['encode_s'] + row['gate_s']:.2f} | "
              f"{row['step_s']:.2f} | {row['decode_s']:.2f} | {row['total_s']:.2f} | {row['peak_bytes'] / 2**30:.2f} GiB | "
              f"{row['skip_bytes'] / 2**20:.0f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
