"""How soon Cancel stops an untiled HI-Diff run: the longest stretch between two interruption checks
and the delay from a Cancel to the run stopping, at several moments of the run.

    python bench/bench_cancel.py [--model default|PATH] [--size 1024] [--device cpu] [--points 3]

A timer thread sets the cancel flag at evenly spaced moments of a measured full run; the check the
pack calls (``host.check_interrupt`` in ComfyUI) raises when the flag is set. Prints one line per
figure.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))


class Cancelled(Exception):
    pass


def main(argv=None) -> None:
    import torch
    from _cli import load_model, pick_device, resolve_model
    from _pack import pack_module

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    p.add_argument("--points", type=int, default=3, help="cancel moments spread over the run")
    args = p.parse_args(argv)

    hidiff = pack_module("models.hidiff")
    device = pick_device(args.device)
    name, path = resolve_model(args.model)
    model = load_model(path, device)
    image = torch.rand(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
    cancel = threading.Event()
    stamps = []

    def check():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        stamps.append(time.perf_counter())
        if cancel.is_set():
            raise Cancelled

    started = time.perf_counter()
    hidiff.deblur(model, image, 0, 0, 32, check, check)
    total = time.perf_counter() - started
    gaps = [b - a for a, b in zip([started] + stamps, stamps + [time.perf_counter()])]
    print(f"model {name}, {args.size}x{args.size} untiled on {device}: run {total:.2f} s, "
          f"{len(stamps)} checks, longest gap between checks {max(gaps):.3f} s")
    delays = []
    for point in range(1, args.points + 1):
        cancel.clear()
        set_at = []
        timer = threading.Timer(total * point / (args.points + 1), lambda: (set_at.append(time.perf_counter()), cancel.set()))
        timer.start()
        try:
            hidiff.deblur(model, image, 0, 0, 32, check, check)
        except Cancelled:
            delays.append(time.perf_counter() - set_at[0])
        timer.cancel()
    print(f"cancel delay at {args.points} moments: " + ", ".join(f"{d:.3f} s" for d in delays) + f" (max {max(delays):.3f} s)")


if __name__ == "__main__":
    main()
