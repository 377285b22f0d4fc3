"""FideDiff's one step (d = 8 and d = 4) and OSDD's against DeblurDiff's 50 steps: network evaluations, seconds and
peak memory per image, with SD 2.1-sized random weights (timing does not depend on the values).

    python bench/bench_onestep.py [--sizes 512x512 1280x720] [--device cpu|cuda] [--dtype fp32|fp16|bf16]
                                  [--threads N] [--methods fidediff8 fidediff4 osdd deblurdiff]

Each (method, size) runs in its own process. On the CPU a full run would take hours, so every part
is timed on ONE of its tiles and multiplied by the tile count (tiles of one part are the same size;
the pipeline runs them one after another), and DeblurDiff is timed over one sampling step and scaled
to 50; the table says so. Peak memory is the process's (weights + one tile's activations), which is
what the tiled pipeline needs. Prints a Markdown table and where FideDiff's time goes.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tools")]
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
LATENT_TILE, VAE_TILE = 128, 1024  # the nodes' defaults (latent pixels, autoencoder pixels)


def _timer(device):
    import torch

    def now():
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()
    return now


def fidediff_case(size, d, device, dtype) -> dict:
    import torch
    from _cli import PeakMemory
    from _pack import pack_module

    sd21 = pack_module("models.sd21")
    fd = pack_module("models.fidediff")
    needs_tiles = pack_module("models.fidediff.model").needs_tiles
    tiles = pack_module("models.sd21.tiles")
    est = pack_module("models.fidediff.estimator_training")
    padding = pack_module("models.common.padding")
    torch.manual_seed(0)
    config = sd21.UNetConfig(4, 4, 320, (1, 2, 4, 4), 2, (True, True, True, False), (1, 1, 1, 1), 1024, True)
    unet, vae = sd21.build_unet(config), sd21.AutoencoderKL(sd21.VAEConfig())
    base = sd21.SDBase(unet, vae, config, sd21.VAEConfig(), "epsilon", "random", "random")
    kcn = fd.KernelControlNet.from_unet(unet, config, 19 * 19)
    model = fd.FideDiff(base, sd21.TextEmbedding(1024), kcn, est.build_estimator(), d).to(device, dtype).eval().requires_grad_(False)
    parameters = {name: sum(p.numel() for p in part.parameters()) for name, part in
                  (("unet", unet), ("kcn", kcn), ("vae", vae), ("estimator", model.estimator))}
    now, memory = _timer(device), PeakMemory(device)
    width, height = size
    image = torch.rand(1, 3, height, width, device=device)
    padded, _ = padding.pad_to_multiple(image, model.pad_multiple(d))
    ph, pw = padded.shape[-2:]
    vh, vw = (ph * 2, pw * 2) if d == 4 else (ph, pw)  # the autoencoder's pixels
    lh, lw = ph * 8 // d // 8, pw * 8 // d // 8  # latent
    memory.reset()
    parts = {}
    with torch.inference_mode():
        t0 = now()
        estimate = model.estimator.estimate(image.to(dtype))
        parts["estimator"] = (now() - t0, 1)
        enc_tiles = tiles.sliding_tiles(vh // 8, vw // 8, VAE_TILE // 8, VAE_TILE * 3 // 4 // 8) if needs_tiles(vh, vw, VAE_TILE) else [(0, vh // 8, 0, vw // 8)]
        top, bottom, left, right = enc_tiles[0]
        piece = torch.rand(1, 3, (bottom - top) * 8, (right - left) * 8, device=device, dtype=dtype)
        t0 = now()
        latent_piece = model.vae.encode(piece * 2 - 1)
        parts["encode"] = (now() - t0, len(enc_tiles))
        step_tiles = tiles.sliding_tiles(lh, lw, LATENT_TILE, LATENT_TILE * 3 // 4) if needs_tiles(lh, lw, LATENT_TILE) else [(0, lh, 0, lw)]
        top, bottom, left, right = step_tiles[0]
        z = torch.randn(1, 4, bottom - top, right - left, device=device, dtype=dtype)
        k_in = torch.softmax(torch.randn(1, 361, bottom - top, right - left, device=device), 1).to(dtype)
        context = model.text(1).to(dtype)
        t = torch.tensor([200.0], device=device)
        t0 = now()
        control = model.kcn(z, k_in, t, context)
        parts["kcn"] = (now() - t0, len(step_tiles))
        t0 = now()
        sd21.one_step(model.unet, model.schedule, z, t, context, control)
        parts["unet"] = (now() - t0, len(step_tiles))
        dec_tile = VAE_TILE // 8
        dec_tiles = tiles.sliding_tiles(vh // 8, vw // 8, dec_tile, dec_tile * 3 // 4) if needs_tiles(vh // 8, vw // 8, dec_tile) else [(0, vh // 8, 0, vw // 8)]
        top, bottom, left, right = dec_tiles[0]
        t0 = now()
        model.vae.decode(torch.randn(1, 4, bottom - top, right - left, device=device, dtype=dtype))
        parts["decode"] = (now() - t0, len(dec_tiles))
    seconds = {k: v * n for k, (v, n) in parts.items()}
    return {"method": f"FideDiff d={d}", "size": f"{width}x{height}", "latent": f"{lw}x{lh}",
            "evaluations": f"1 UNet + 1 KCN ({len(step_tiles)} tile{'s' if len(step_tiles) > 1 else ''})",
            "parts": {k: [round(v, 3), n] for k, (v, n) in parts.items()}, "seconds": sum(seconds.values()),
            "peak_mib": memory.peak_mib(), "parameters": parameters, "scaled": any(n > 1 for _, n in parts.values())}


def osdd_case(size, device, dtype) -> dict:
    """OSDD: eVAE encoder (with skips), the γ gate, one UNet step with both LoRAs unmerged (rank 4), eVAE
    decoder with the skips cut on the decoder's tile grid."""
    import torch
    from _cli import PeakMemory
    from _pack import pack_module

    sd21 = pack_module("models.sd21")
    osdd = pack_module("models.osdd")
    lora = pack_module("models.sd21.lora")
    tiles = pack_module("models.sd21.tiles")
    padding = pack_module("models.common.padding")
    torch.manual_seed(0)
    config = sd21.UNetConfig(4, 4, 320, (1, 2, 4, 4), 2, (True, True, True, False), (1, 1, 1, 1), 1024, True)
    base = sd21.SDBase(sd21.build_unet(config), sd21.AutoencoderKL(sd21.VAEConfig()), config, sd21.VAEConfig(),
                       "epsilon", "random", "random")
    model = osdd.OSDD.fresh(base)
    lora.merge_adapters(model.evae.vae)  # the encoder LoRA, as load_osdd merges it
    lora.unwrap_lora(model.evae.vae)
    model = model.to(device, dtype).eval().requires_grad_(False)
    parameters = {"unet (with both LoRAs)": sum(p.numel() for p in model.unet.parameters()),
                  "eVAE": sum(p.numel() for p in model.evae.parameters()), "gate": sum(p.numel() for p in model.gate.parameters())}
    now, memory = _timer(device), PeakMemory(device)
    width, height = size
    image = torch.rand(1, 3, height, width, device=device)
    padded, _ = padding.pad_to_multiple(image, model.pad_multiple)
    ph, pw = padded.shape[-2:]
    lh, lw = ph // 8, pw // 8
    memory.reset()
    parts = {}
    with torch.inference_mode():
        enc_tiles = tiles.sliding_tiles(lh, lw, VAE_TILE // 8, VAE_TILE * 3 // 4 // 8)
        top, bottom, left, right = enc_tiles[0]
        piece = torch.rand(1, 3, (bottom - top) * 8, (right - left) * 8, device=device, dtype=dtype)
        t0 = now()
        _, skips = model.encode(piece)
        parts["encode"] = (now() - t0, len(enc_tiles))
        t0 = now()
        gamma = model.gamma_from(skips)
        parts["gate"] = (now() - t0, 1)
        step_tiles = tiles.sliding_tiles(lh, lw, LATENT_TILE, LATENT_TILE * 3 // 4)
        top, bottom, left, right = step_tiles[0]
        z = torch.randn(1, 4, bottom - top, right - left, device=device, dtype=dtype)
        t0 = now()
        model.step(z, gamma)
        parts["unet"] = (now() - t0, len(step_tiles))
        dec_tiles = tiles.sliding_tiles(lh, lw, VAE_TILE // 8, VAE_TILE * 3 // 4 // 8)
        top, bottom, left, right = dec_tiles[0]
        box = skips.crop(0, bottom - top, 0, right - left, 8) if len(enc_tiles) == 1 else None
        if box is None:
            _, box = model.encode(torch.rand(1, 3, (bottom - top) * 8, (right - left) * 8, device=device, dtype=dtype))
        t0 = now()
        model.decode(torch.randn(1, 4, bottom - top, right - left, device=device, dtype=dtype), box)
        parts["decode"] = (now() - t0, len(dec_tiles))
    seconds = {k: v * n for k, (v, n) in parts.items()}
    skip_bytes = sum(c * (ph >> k) * (pw >> k) for k, c in enumerate((128, 256, 512, 512))) * torch.finfo(dtype).bits // 8
    return {"method": "OSDD", "size": f"{width}x{height}", "latent": f"{lw}x{lh}",
            "evaluations": f"1 UNet, 2 LoRAs ({len(step_tiles)} tile{'s' if len(step_tiles) > 1 else ''})",
            "parts": {k: [round(v, 3), n] for k, (v, n) in parts.items()}, "seconds": sum(seconds.values()),
            "peak_mib": memory.peak_mib(), "parameters": parameters, "skip_mib": skip_bytes / 2 ** 20,
            "scaled": any(n > 1 for _, n in parts.values())}


def deblurdiff_case(size, device, dtype, steps=50) -> dict:
    import torch
    from _cli import PeakMemory
    from _pack import pack_module
    from bench_deblurdiff import full_config

    dd = pack_module("models.deblurdiff")
    torch.manual_seed(0)
    model = dd.DeblurDiff(full_config()).to(device, dtype).eval().requires_grad_(False)
    now, memory = _timer(device), PeakMemory(device)
    width, height = size
    image = torch.rand(1, 3, height, width)
    marks = []
    memory.reset()
    started = now()
    dd.deblur(model, image, dd.SamplingOptions(steps=1), 0, device, on_step=lambda: marks.append(now()))
    end = now()
    # marks: after encoding, after the one step, after decoding (see DeblurDiff's pipeline)
    step = marks[1] - marks[0]
    rest = (end - started) - step  # prompts, encoding, decoding, colour fix
    return {"method": f"DeblurDiff {steps} steps", "size": f"{width}x{height}", "latent": f"{(width + 63) // 64 * 8}x{(height + 63) // 64 * 8}",
            "evaluations": f"{steps} × (UNet + ControlNet + LKPN)", "parts": {"step": [round(step, 3), steps], "other": [round(rest, 3), 1]},
            "seconds": rest + steps * step, "peak_mib": memory.peak_mib(), "scaled": True}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["512x512", "1280x720"])
    parser.add_argument("--methods", nargs="+", default=["fidediff8", "fidediff4", "osdd", "deblurdiff"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        method, size = args.child
        size = tuple(int(v) for v in size.split("x"))
        device, dtype = torch.device(args.device), getattr(torch, DTYPES[args.dtype])
        if method == "deblurdiff":
            row = deblurdiff_case(size, device, dtype)
        elif method == "osdd":
            row = osdd_case(size, device, dtype)
        else:
            row = fidediff_case(size, int(method[-1]), device, dtype)
        print(json.dumps(row))
        return 0
    rows = []
    for size in args.sizes:
        for method in args.methods:
            command = [sys.executable, os.path.abspath(__file__), "--child", method, size, "--device", args.device,
                       "--dtype", args.dtype, "--threads", str(args.threads)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode:
                print(result.stderr[-2000:], file=sys.stderr)
                rows.append({"method": method, "size": size, "error": (result.stderr.strip().splitlines() or ["failed"])[-1]})
            else:
                rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"Per image on {args.device} ({args.dtype}, {args.threads or 'default'} threads), SD 2.1-sized random weights. "
          "Parts are timed on one tile and multiplied by the tile count; DeblurDiff on one step scaled to 50.\n")
    print("| size | method | latent | network evaluations | s/image | × faster than DeblurDiff | peak memory |")
    print("|---|---|---|---|---|---|---|")
    reference = {r["size"]: r["seconds"] for r in rows if r.get("method", "").startswith("DeblurDiff") and "seconds" in r}
    for row in rows:
        if "error" in row:
            print(f"| {row['size']} | {row['method']} | — | — | failed: {row['error']} | — | — |")
            continue
        ratio = reference.get(row["size"])
        faster = f"{ratio / row['seconds']:.1f}×" if ratio and not row["method"].startswith("DeblurDiff") else "—"
        print(f"| {row['size']} | {row['method']} | {row['latent']} | {row['evaluations']} | {row['seconds']:.1f} | {faster} | "
              f"{row['peak_mib'] / 1024:.1f} GiB |")
    print("\nWhere the one-step methods' time goes (seconds per image: part × tiles):\n")
    for row in rows:
        if "parts" in row and not row["method"].startswith("DeblurDiff"):
            total = row["seconds"]
            shares = ", ".join(f"{k} {v * n:.1f} s ({100 * v * n / total:.0f}%)" for k, (v, n) in row["parts"].items())
            skips = f"; eVAE skips held {row['skip_mib']:.0f} MiB" if "skip_mib" in row else ""
            print(f"- {row['size']} {row['method']}: {shares}{skips}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
