"""Convert the official DeblurDiff ``model.pth`` into the pack's ``.safetensors`` (diffusers key names,
configuration in the metadata): it loads faster, memory-mapped, and without any pickle.

    python tools/convert_deblurdiff.py ComfyUI/models/deblur/DeblurDiff/model.pth
    # writes ComfyUI/models/deblur/DeblurDiff/model.safetensors (fp32; --half for fp16, half the size)
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

from _pack import pack_module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", help="the official model.pth")
    parser.add_argument("-o", "--output", help="output .safetensors (default: beside the input, same name)")
    parser.add_argument("--half", action="store_true", help="store fp16 weights (the fp32 official results then differ slightly)")
    args = parser.parse_args(argv)
    deblurdiff = pack_module("models.deblurdiff")
    checkpoint = pack_module("models.common.checkpoint")
    output = args.output or os.path.splitext(args.checkpoint)[0] + ".safetensors"
    if os.path.abspath(output) == os.path.abspath(args.checkpoint):
        print("error: the output would overwrite the input", file=sys.stderr)
        return 2
    try:
        model = deblurdiff.load_deblurdiff(args.checkpoint)
    except checkpoint.CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    dtype = torch.float16 if args.half else torch.float32
    deblurdiff.save_deblurdiff(model, output, source=f"official DeblurDiff {os.path.basename(args.checkpoint)}", dtype=dtype)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
