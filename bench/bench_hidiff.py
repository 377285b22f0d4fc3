"""HI-Diff speed, peak memory and output difference: the pack against the official forward pass.

    python bench/bench_hidiff.py --official /path/to/HI-Diff [--weights models/deblur/HI_Diff_GoPro]
                                 [--sizes 256x256 1280x720] [--device cpu|cuda] [--repeat 2]

Each (implementation, size) runs in its own process, so peak memory is that run's alone (peak RSS
on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA). Without ``--weights`` both sides get the
same synthetic GoPro-size weights (tests/random_weights.py). The official code is imported from the
given checkout (never copied here) through the stub of tests/golden/make_hidiff_golden.py.
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "golden"), os.path.join(ROOT, "tools")]


def synthetic_weights(folder: str) -> str:
    import torch
    from random_weights import random_state_dict

    shapes = json.load(open(os.path.join(ROOT, "tests", "data", "hidiff_shapes.json")))["gopro"]
    os.makedirs(folder, exist_ok=True)
    for part in ("net_g", "net_le_dm", "net_d"):
        torch.save({"params": random_state_dict(shapes[part], 2024)}, os.path.join(folder, f"{part}.pth"))
    return folder


def run_ours(weights, image, seed, device):
    from _pack import pack_module

    hidiff = pack_module("models.hidiff")
    model = hidiff.load_hidiff(weights).to(device)
    return lambda: hidiff.deblur(model, image.to(device), seed)


def run_official(weights, image, seed, device, official):
    import torch
    import make_hidiff_golden as golden

    models_mod, official = golden.import_official(official)
    opt = golden.make_opt(golden.yml_config(official, "GoPro.yml"), "bench", pretrain_dir=weights)
    for key in [k for k in opt["path"] if k.endswith("_le")]:
        opt["path"].pop(key)  # stage-one encoder: not used at test time
    opt["num_gpu"] = 1 if device == "cuda" else 0
    model = golden.build(models_mod, opt)

    def forward():
        model.lq = image.to(device)
        torch.manual_seed(seed)
        model.test()
        return model.output
    return forward


def child(args) -> None:
    import torch

    h, w = map(int, args.size.split("x"))
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    if args.impl == "ours":
        forward = run_ours(args.weights, image, args.seed, args.device)
    else:
        forward = run_official(args.weights, image, args.seed, args.device, args.official)
    times = []
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with torch.inference_mode():
        for _ in range(args.repeat):
            start = time.perf_counter()
            output = forward()
            if args.device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if args.device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    torch.save(output.float().cpu(), args.out)
    print(json.dumps({"seconds": min(times), "peak_mib": peak / 2**20}))


def measure(impl, size, args, weights, out):
    command = [sys.executable, __file__, "--child", impl, "--size", size, "--weights", weights, "--out", out,
               "--device", args.device, "--repeat", str(args.repeat), "--seed", str(args.seed)]
    if args.official:
        command += ["--official", args.official]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{impl} {size} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", help="checkout of zhengchen1999/HI-Diff (omit to time the pack alone)")
    parser.add_argument("--weights", help="HI-Diff release folder (default: synthetic GoPro-size weights)")
    parser.add_argument("--sizes", nargs="+", default=["256x256", "1280x720"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--child", choices=["ours", "official"])
    parser.add_argument("--size")
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.child:
        args.impl = args.child
        return child(args)

    import torch

    scratch = tempfile.mkdtemp(prefix="bench-hidiff-")
    weights = args.weights or synthetic_weights(os.path.join(scratch, "weights"))
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"weights {'synthetic GoPro-size' if not args.weights else args.weights}\n")
    print("| size | official s | pack s | speed-up | official peak MiB | pack peak MiB | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        ours = measure("ours", size, args, weights, os.path.join(scratch, f"ours-{size}.pt"))
        if args.official:
            ref = measure("official", size, args, weights, os.path.join(scratch, f"official-{size}.pt"))
            diff = (torch.load(os.path.join(scratch, f"ours-{size}.pt")) - torch.load(os.path.join(scratch, f"official-{size}.pt"))).abs().max().item()
            print(f"| {size} | {ref['seconds']:.2f} | {ours['seconds']:.2f} | {ref['seconds'] / ours['seconds']:.2f}x "
                  f"| {ref['peak_mib']:.0f} | {ours['peak_mib']:.0f} | {diff:.2e} |", flush=True)
        else:
            print(f"| {size} | – | {ours['seconds']:.2f} | – | – | {ours['peak_mib']:.0f} | – |", flush=True)


if __name__ == "__main__":
    main()
