"""What Blur Kernel Estimate's level_mask looks like on the example photos (bundled estimator), and how
much of HI-Diff's change a masked deblur keeps (the masked_deblur workflow: bundled model, feather 8).

    python bench/level_mask.py [photos...]     # default: example_images/*.png

Prints one line per photo: the blur level, the mask's min / mean / max, and the mean absolute change of
the masked output over the unmasked one's (1.0 = the whole deblur kept).
"""
from __future__ import annotations

import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))


def main(argv=None) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from _pack import pack_module

    estimate = pack_module("nodes.fidediff_estimate")
    hidiff = pack_module("nodes.hidiff")
    model = hidiff.HIDiffLoader().load(hidiff.DEFAULT_NAME, "fp32")[0]
    for path in (argv or sys.argv[1:]) or sorted(glob.glob(os.path.join(ROOT, "example_images", "*.png"))):
        image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255)[None]
        result = estimate.BlurKernelEstimate().estimate(image, estimate.DEFAULT_NAME)["result"]
        mask = result[4]
        full = hidiff.HIDiffDeblur().deblur(model, image, 100)[0]
        masked = hidiff.HIDiffDeblur().deblur(model, image, 100, mask=mask, feather=8)[0]
        kept = float((masked - image).abs().mean() / (full - image).abs().mean().clamp_min(1e-12))
        print(f"{os.path.basename(path)}: level {result[1]:.0f}, level_mask min/mean/max "
              f"{float(mask.min()):.2f} / {float(mask.mean()):.2f} / {float(mask.max()):.2f}, deblur kept {kept:.2f}")


if __name__ == "__main__":
    main()
