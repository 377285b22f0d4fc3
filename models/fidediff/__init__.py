"""FideDiff (Liu et al., ICLR 2026): one-step SD 2.1 deblurring with a kernel estimator, the blur
level as the timestep and a Kernel ControlNet. The authors published no code or weights; this is a
re-implementation from the paper's descriptions (see docs/fidediff.md for every choice made here).

* :mod:`.kcn` — the Kernel ControlNet (filter injection + ControlNet copied from the base UNet);
* :mod:`.model` — encode (d = 4 | 8), one step, decode, kernel maps at latent size;
* :mod:`.adapter` — FideDiff's own weights in one file, applied to the user's SD 2.1 base;
* :mod:`.pipeline` — whole images: padding, estimator, tiles, progress;
* :mod:`.training` — the three training stages (tools/train_fidediff.py).
The kernel estimator M and the blur-level regressor T are the estimator modules of this package.
"""
from .adapter import find_adapters, is_adapter_file, load_fidediff, read_adapter, save_adapter
from .kcn import KernelControlNet
from .model import DEFAULT_TIMESTEP, LATENT_DOWNSAMPLES, FideDiff, fit_kernel_size, kernel_input

__all__ = ["find_adapters", "is_adapter_file", "load_fidediff", "read_adapter", "save_adapter", "KernelControlNet",
           "DEFAULT_TIMESTEP", "LATENT_DOWNSAMPLES", "FideDiff", "fit_kernel_size", "kernel_input"]
