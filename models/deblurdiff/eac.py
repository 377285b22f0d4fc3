"""Element-wise Adaptive Convolution (EAC): a different k×k kernel at every pixel of every group.

The official implementation is a cupy CUDA kernel (``idynamic_forward_kernel``, from
DemystifyLocalViT). For input ``x [N, C, H, W]`` and kernels ``[N, G·k·k, H, W]`` (viewed as
``[N, G, k, k, H, W]``) it computes, with ``pad = (k-1)/2`` and channel ``c`` in group ``c // (C/G)``::

    out[n, c, h, w] = Σ_{i,j} kernels[n, g·k·k + i·k + j, h, w] · x[n, c, h - pad + i, w - pad + j]

over the taps that fall inside the image (zero padding). It is a correlation: tap ``(i, j)`` reads
the pixel ``i - pad`` rows below and ``j - pad`` columns right of the output pixel. DeblurDiff uses
k = 5, G = C = 4 (one kernel per latent channel) and adds ``x`` back (the LKPN residual).

Two implementations that run on any device:

* :func:`eac_reference` unfolds the k·k neighbourhoods and contracts them with the kernels
  (plain, k² times the input in temporaries);
* :func:`eac` accumulates k² shifted views of the padded input in place — no k² temporaries,
  same arithmetic (the one the pipeline uses; it is the blur lab's
  :func:`~..blur.convolve.per_pixel_filter`, shared with FideDiff's reblur). A Triton kernel would save little more: the latent
  has 4 channels, so EAC is a negligible part of a sampling step next to three UNets.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..blur.convolve import kernel_groups, per_pixel_filter


def eac_reference(x: torch.Tensor, kernels: torch.Tensor, size: int = 5) -> torch.Tensor:
    """EAC through ``unfold``: neighbourhoods ``[N, C, k·k, H, W]`` times the group's kernels."""
    groups = kernel_groups(x, kernels, size, "EAC: ")
    n, c, h, w = x.shape
    patches = F.unfold(x, size, padding=(size - 1) // 2).view(n, c, size * size, h, w)
    weights = kernels.view(n, groups, 1, size * size, h, w).expand(n, groups, c // groups, size * size, h, w)
    return (patches * weights.reshape(n, c, size * size, h, w)).sum(2)


def eac(x: torch.Tensor, kernels: torch.Tensor, size: int = 5) -> torch.Tensor:
    """EAC as k² shifted multiply-adds into one output buffer (memory: the padded input + output);
    the blur lab's per-pixel filter in correlation form with zero padding."""
    kernel_groups(x, kernels, size, "EAC: ")
    return per_pixel_filter(x, kernels, size, border="zeros", correlate=True)
