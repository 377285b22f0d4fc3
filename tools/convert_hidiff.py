"""Merge an official HI-Diff release folder (net_g.pth, net_le_dm.pth, net_d.pth) into one
``.safetensors`` with metadata, which loads faster and without any pickle.

    python tools/convert_hidiff.py ComfyUI/models/deblur/HI_Diff_GoPro
    # writes ComfyUI/models/deblur/HI_Diff_GoPro.safetensors
"""
from __future__ import annotations

import argparse
import os
import sys

from _pack import pack_module


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="official release folder")
    parser.add_argument("-o", "--output", help="output .safetensors (default: <folder>.safetensors)")
    args = parser.parse_args(argv)
    hidiff = pack_module("models.hidiff")
    checkpoint = pack_module("models.common.checkpoint")
    folder = os.path.normpath(args.folder)
    output = args.output or folder + ".safetensors"
    try:
        model = hidiff.load_hidiff(folder)
    except checkpoint.CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    hidiff.save_hidiff(model, output, source=f"official HI-Diff release folder {os.path.basename(folder)}")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
