"""FideDiff's one step (d = 8 and d = 4) and OSDD's against DeblurDiff's 50 steps: network evaluations, seconds and
peak memory per image, with SD 2.1-sized random weights (timing does not depend on the values).

    python bench/bench_onestep.py [--sizes 512x512 1280x720] [--device cpu|cuda] [--dtype fp32|fp16|bf16]
                                  [--threads N] [--methods fidediff8 fidediff4 osdd deblurdiff] [--flops]

Each (method, size) runs in its own process. On the CPU a full run would take hours, so every part
is timed on ONE of its tiles and multiplied by the tile count (tiles of one part are the same size;
the pipeline runs them one after another), and DeblurDiff is timed over one sampling step and scaled
to 50; the table says so. Peak memory is the process's (weights + one tile's activations), which is
what the tiled pipeline needs. Prints a Markdown table and where FideDiff's time goes.

``--flops`` counts the networks' floating-point operations instead (torch's FlopCounterMode: matrix
products, convolutions, attention), on the meta device: no weights, no time, the same parts and tiles.
The work does not depend on the hardware: its ratios are what a device reaches when it runs every part
equally efficiently, and a device changes only how fast each part runs.
"""
from __future__ import annotations

import argparse
import json
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


class Meter:
    """Runs the parts of one pipeline: times each (seconds), or with ``flops`` counts its TFLOPs on the
    meta device. A part is measured once and multiplied by ``count`` (its tiles, or DeblurDiff's steps).
    On a GPU each part runs once untimed first (kernel selection, lazy initialisation); on the CPU, where
    one part takes minutes, it does not."""

    def __init__(self, device, flops: bool):
        self.flops, self.now, self.parts = flops, _timer(device), {}
        self.warm_up = not flops and device.type not in ("cpu", "meta")

    def __call__(self, name: str, count: int, run):
        if self.flops:
            from torch.utils.flop_counter import FlopCounterMode

            with FlopCounterMode(display=False) as counter:
                result = run()
            self.parts[name] = (counter.get_total_flops() / 1e12, count)
        else:
            if self.warm_up:
                run()
            started = self.now()
            result = run()
            self.parts[name] = (self.now() - started, count)
        return result

    def total(self) -> float:
        return sum(value * count for value, count in self.parts.values())

    def row(self, **fields) -> dict:
        key = "tflops" if self.flops else "seconds"
        return {**fields, "parts": {k: [round(v, 3), n] for k, (v, n) in self.parts.items()}, key: self.total(),
                "scaled": any(n > 1 for _, n in self.parts.values())}


def _building(flops: bool, device):
    """Where models are built: on the meta device for FLOP counts (instant, no memory), else on the device
    that runs them (a GPU initialises SD-sized random weights in a blink; the CPU takes seconds)."""
    import torch

    return torch.device("meta") if flops else torch.device(device)


def _tiles_of(tiles, height, width, tile):
    """The pipeline's tiles of a ``height × width`` map (one box when it fits one tile's area)."""
    if tiles.needs_tiles(height, width, tile):
        return tiles.sliding_tiles(height, width, tile, tile * 3 // 4)
    return [(0, height, 0, width)]


def _random_sd21_base():
    """An SD 2.1-sized base (UNet and autoencoder) with random weights, on the current default device."""
    from _pack import pack_module

    sd21 = pack_module("models.sd21")
    config = sd21.UNetConfig(4, 4, 320, (1, 2, 4, 4), 2, (True, True, True, False), (1, 1, 1, 1), 1024, True)
    return sd21.SDBase(sd21.build_unet(config), sd21.AutoencoderKL(sd21.VAEConfig()), config, sd21.VAEConfig(),
                       "epsilon", "random", "random")


def fidediff_case(size, d, device, dtype, flops=False) -> dict:
    import torch
    from _cli import PeakMemory
    from _pack import pack_module

    sd21 = pack_module("models.sd21")
    fd = pack_module("models.fidediff")
    tiles = pack_module("models.sd21.tiles")
    est = pack_module("models.fidediff.estimator_training")
    padding = pack_module("models.common.padding")
    torch.manual_seed(0)
    with _building(flops, device):
        base = _random_sd21_base()
        kcn = fd.KernelControlNet.from_unet(base.unet, base.unet_config, 19 * 19)
        model = fd.FideDiff(base, sd21.TextEmbedding(1024), kcn, est.build_estimator(), d)
    model = model.to(device, dtype).eval().requires_grad_(False)
    parameters = {name: sum(p.numel() for p in part.parameters()) for name, part in
                  (("unet", model.unet), ("kcn", kcn), ("vae", model.vae), ("estimator", model.estimator))}
    meter, memory = Meter(device, flops), PeakMemory(device)
    width, height = size
    image = torch.rand(1, 3, height, width, device=device)
    padded, _ = padding.pad_to_multiple(image, model.pad_multiple(d))
    ph, pw = padded.shape[-2:]
    vh, vw = (ph * 2, pw * 2) if d == 4 else (ph, pw)  # the autoencoder's pixels
    lh, lw = ph * 8 // d // 8, pw * 8 // d // 8  # latent
    memory.reset()
    with torch.inference_mode():
        meter("estimator", 1, lambda: model.estimator.estimate(image.to(dtype)))
        vae_tiles = _tiles_of(tiles, vh // 8, vw // 8, VAE_TILE // 8)  # on the autoencoder's latent grid
        top, bottom, left, right = vae_tiles[0]
        up = 2 if d == 4 else 1  # the image region a tile covers (d = 4 upsamples it ×2 for the autoencoder)
        piece = torch.rand(1, 3, (bottom - top) * 8 // up, (right - left) * 8 // up, device=device, dtype=dtype)
        # the pipeline's own encode/decode: channels-last, the ×2 resampling at d = 4
        meter("encode", len(vae_tiles), lambda: model.encode(piece, d))
        step_tiles = _tiles_of(tiles, lh, lw, LATENT_TILE)
        top, bottom, left, right = step_tiles[0]
        z = torch.randn(1, 4, bottom - top, right - left, device=device, dtype=dtype)
        k_in = torch.softmax(torch.randn(1, 361, bottom - top, right - left, device=device), 1).to(dtype)
        context = model.text(1).to(dtype)
        t = torch.tensor([200.0], device=device)
        control = meter("kcn", len(step_tiles), lambda: model.kcn(z, k_in, t, context))
        meter("unet", len(step_tiles), lambda: sd21.one_step(model.unet, model.schedule, z, t, context, control))
        top, bottom, left, right = vae_tiles[0]
        meter("decode", len(vae_tiles),
              lambda: model.decode(torch.randn(1, 4, bottom - top, right - left, device=device, dtype=dtype), d))
    return meter.row(method=f"FideDiff d={d}", size=f"{width}x{height}", latent=f"{lw}x{lh}",
                     evaluations=f"1 UNet + 1 KCN ({len(step_tiles)} tile{'s' if len(step_tiles) > 1 else ''})",
                     peak_mib=memory.peak_mib(), parameters=parameters)


def osdd_case(size, device, dtype, flops=False) -> dict:
    """OSDD: eVAE encoder (with skips), the γ gate, one UNet step with both LoRAs unmerged (rank 4), eVAE
    decoder with the skips cut on the decoder's tile grid; tiles as FideDiff's (only above one tile's area)."""
    import torch
    from _cli import PeakMemory
    from _pack import pack_module

    osdd = pack_module("models.osdd")
    lora = pack_module("models.sd21.lora")
    tiles = pack_module("models.sd21.tiles")
    padding = pack_module("models.common.padding")
    torch.manual_seed(0)
    with _building(flops, device):
        model = osdd.OSDD.fresh(_random_sd21_base())
        lora.merge_adapters(model.evae.vae)  # the encoder LoRA, as load_osdd merges it
        lora.unwrap_lora(model.evae.vae)
    model = model.to(device, dtype).eval().requires_grad_(False)
    parameters = {"unet (with both LoRAs)": sum(p.numel() for p in model.unet.parameters()),
                  "eVAE": sum(p.numel() for p in model.evae.parameters()), "gate": sum(p.numel() for p in model.gate.parameters())}
    meter, memory = Meter(device, flops), PeakMemory(device)
    width, height = size
    image = torch.rand(1, 3, height, width, device=device)
    padded, _ = padding.pad_to_multiple(image, model.pad_multiple)
    ph, pw = padded.shape[-2:]
    lh, lw = ph // 8, pw // 8
    memory.reset()
    with torch.inference_mode():
        enc_tiles = _tiles_of(tiles, lh, lw, VAE_TILE // 8)
        top, bottom, left, right = enc_tiles[0]
        piece = torch.rand(1, 3, (bottom - top) * 8, (right - left) * 8, device=device, dtype=dtype)
        _, skips = meter("encode", len(enc_tiles), lambda: model.encode(piece))
        gamma = meter("gate", 1, lambda: model.gamma_from(skips))
        step_tiles = _tiles_of(tiles, lh, lw, LATENT_TILE)
        top, bottom, left, right = step_tiles[0]
        z = torch.randn(1, 4, bottom - top, right - left, device=device, dtype=dtype)
        gamma = 0.5 if flops else gamma  # the range check reads γ's value, which the meta device has not
        meter("unet", len(step_tiles), lambda: model.step(z, gamma))
        dec_tiles = enc_tiles
        top, bottom, left, right = dec_tiles[0]
        box = skips.crop(0, bottom - top, 0, right - left, 8) if len(enc_tiles) == 1 else None
        if box is None:
            _, box = model.encode(torch.rand(1, 3, (bottom - top) * 8, (right - left) * 8, device=device, dtype=dtype))
        meter("decode", len(dec_tiles),
              lambda: model.decode(torch.randn(1, 4, bottom - top, right - left, device=device, dtype=dtype), box))
    skip_bytes = sum(c * (ph >> k) * (pw >> k) for k, c in enumerate((128, 256, 512, 512))) * torch.finfo(dtype).bits // 8
    return meter.row(method="OSDD", size=f"{width}x{height}", latent=f"{lw}x{lh}",
                     evaluations=f"1 UNet, 2 LoRAs ({len(step_tiles)} tile{'s' if len(step_tiles) > 1 else ''})",
                     peak_mib=memory.peak_mib(), parameters=parameters, skip_mib=skip_bytes / 2 ** 20)


def deblurdiff_case(size, device, dtype, steps=50, flops=False) -> dict:
    import torch
    from _cli import PeakMemory
    from _pack import pack_module
    from bench_deblurdiff import full_config

    dd = pack_module("models.deblurdiff")
    pipeline = pack_module("models.deblurdiff.pipeline")
    torch.manual_seed(0)
    with _building(flops, device):
        model = dd.DeblurDiff(full_config())
    model = model.to(device, dtype).eval().requires_grad_(False)
    meter, memory = Meter(device, flops), PeakMemory(device)
    width, height = size
    memory.reset()
    padded = pipeline.pad_to_multiple(torch.rand(1, 3, height, width, device=device, dtype=dtype))
    lh, lw = padded.shape[-2] // 8, padded.shape[-1] // 8
    if flops:  # the pipeline's networks, one by one (its sampling loop needs real values)
        with torch.inference_mode():
            tokens = model.tokenizer([""]).to(device)
            text = meter("text", 1, lambda: model.text_encoder(tokens))
            condition = meter("encode", 1, lambda: model.vae.encode(padded))
            x, t = torch.randn(1, 4, lh, lw, device=device, dtype=dtype), torch.tensor([500], device=device)
            meter("step", steps, lambda: model.predict(x, t, condition, text))
            meter("decode", 1, lambda: model.vae.decode(x))
    else:
        if meter.warm_up:
            dd.deblur(model, torch.rand(1, 3, height, width), dd.SamplingOptions(steps=1), 0, device)
        now, marks = meter.now, []
        started = now()
        dd.deblur(model, torch.rand(1, 3, height, width), dd.SamplingOptions(steps=1), 0, device,
                  on_step=lambda: marks.append(now()))
        end = now()
        # marks: after encoding, after the one step, after decoding (see DeblurDiff's pipeline)
        step = marks[1] - marks[0]
        meter.parts = {"step": (step, steps), "other": ((end - started) - step, 1)}  # other: prompts, encoding, decoding
    return meter.row(method=f"DeblurDiff {steps} steps", size=f"{width}x{height}", latent=f"{lw}x{lh}",
                     evaluations=f"{steps} × (UNet + ControlNet + LKPN)", peak_mib=memory.peak_mib()) | {"scaled": True}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["512x512", "1280x720"])
    parser.add_argument("--methods", nargs="+", default=["fidediff8", "fidediff4", "osdd", "deblurdiff"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--flops", action="store_true", help="count network TFLOPs on the meta device instead of timing")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        method, size = args.child
        size = tuple(int(v) for v in size.split("x"))
        device = torch.device("meta" if args.flops else args.device)
        dtype = getattr(torch, DTYPES[args.dtype])
        if method == "deblurdiff":
            row = deblurdiff_case(size, device, dtype, flops=args.flops)
        elif method == "osdd":
            row = osdd_case(size, device, dtype, flops=args.flops)
        else:
            row = fidediff_case(size, int(method[-1]), device, dtype, flops=args.flops)
        print(json.dumps(row))
        return 0
    rows = []
    for size in args.sizes:
        for method in args.methods:
            command = [sys.executable, os.path.abspath(__file__), "--child", method, size, "--device", args.device,
                       "--dtype", args.dtype, "--threads", str(args.threads)] + (["--flops"] if args.flops else [])
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode:
                print(result.stderr[-2000:], file=sys.stderr)
                rows.append({"method": method, "size": size, "error": (result.stderr.strip().splitlines() or ["failed"])[-1]})
            else:
                rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print_tables(rows, args)
    return 0


def print_tables(rows: list[dict], args) -> None:
    key, unit = ("tflops", "TFLOP") if args.flops else ("seconds", "s")
    if args.flops:
        print(f"Network work per image ({args.dtype}), SD 2.1-sized models, counted on the meta device (matrix products, "
              "convolutions, attention). Parts are counted on one tile and multiplied by the tile count; DeblurDiff's step by 50.\n")
        print("| size | method | latent | network evaluations | TFLOP/image | × less work than DeblurDiff |")
        print("|---|---|---|---|---|---|")
    else:
        print(f"Per image on {args.device} ({args.dtype}, {args.threads or 'default'} threads), SD 2.1-sized random weights. "
              "Parts are timed on one tile and multiplied by the tile count; DeblurDiff on one step scaled to 50.\n")
        print("| size | method | latent | network evaluations | s/image | × faster than DeblurDiff | peak memory |")
        print("|---|---|---|---|---|---|---|")
    reference = {r["size"]: r[key] for r in rows if r.get("method", "").startswith("DeblurDiff") and key in r}
    for row in rows:
        if "error" in row:
            print(f"| {row['size']} | {row['method']} | — | — | failed: {row['error']} | — |" + ("" if args.flops else " — |"))
            continue
        ratio = reference.get(row["size"])
        faster = f"{ratio / row[key]:.1f}×" if ratio and not row["method"].startswith("DeblurDiff") else "—"
        memory = "" if args.flops else f" {row['peak_mib'] / 1024:.1f} GiB |"
        print(f"| {row['size']} | {row['method']} | {row['latent']} | {row['evaluations']} | {row[key]:.{2 if args.flops else 1}f} | "
              f"{faster} |{memory}")
    print(f"\nWhere the one-step methods' {'work' if args.flops else 'time'} goes ({unit} per image: part × tiles):\n")
    for row in rows:
        if "parts" in row and not row["method"].startswith("DeblurDiff"):
            total = row[key]
            shares = ", ".join(f"{k} {v * n:.{2 if args.flops else 1}f} {unit} ({100 * v * n / total:.0f}%)"
                               for k, (v, n) in row["parts"].items())
            skips = f"; eVAE skips held {row['skip_mib']:.0f} MiB" if "skip_mib" in row and not args.flops else ""
            print(f"- {row['size']} {row['method']}: {shares}{skips}")


if __name__ == "__main__":
    sys.exit(main())
