"""Peak resident memory of tools/deblur.py on one large image with the bundled model, one thread.

    flock /tmp/mem.lock python bench/cli_peak_memory.py --size 4096    # 16 MP, --tile auto

The tool runs in a child process; its peak is the child's ``ru_maxrss`` (getrusage), so the figure
includes Python, torch, the model, the image buffers and the PNG writing: what a user's machine sees.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageFilter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=4096, help="side of the square test image in px")
    p.add_argument("--tile", default="auto")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "big.png")
        noise = np.random.default_rng(0).integers(0, 256, (args.size // 8, args.size // 8, 3), dtype=np.uint8)
        Image.fromarray(noise).resize((args.size, args.size), Image.BICUBIC).filter(ImageFilter.GaussianBlur(3)).save(source)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DEBLUR_NO_PROGRESS="1")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "deblur.py"), source, "--tile", args.tile,
                               "--device", "cpu", "--out", os.path.join(folder, "out")], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20  # KiB on Linux → GiB
    print(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "(no output)")
    print(f"{args.size}x{args.size} ({args.size * args.size / 1e6:.1f} MP), --tile {args.tile}, 1 thread: "
          f"exit {done.returncode}, peak RSS {peak:.2f} GiB, {seconds:.0f} s")


if __name__ == "__main__":
    main()
