"""The ``BLUR_KERNEL`` value that flows between nodes, as a plain dict (no class to import, so any
node pack, script or frontend code can build and read one):

.. code-block:: text

    {
      "kernels": float32 tensor [B, gh, gw, k, k] on the CPU
                 B   images of the batch, one set of kernels each
                 gh, gw  kernel grid: (1, 1) = one kernel for the whole image (uniform blur);
                     otherwise kernels at the centres of a gh × gw grid of cells, blended
                     bilinearly in between (spatially varying blur). A per-pixel kernel map
                     (e.g. DeblurDiff's, at latent resolution h × w) is the grid (h, w).
                 k   odd kernel size; centre pixel k // 2; entries >= 0, each kernel sums to 1.
                     Convolution orientation: blurred(p) = Σ_u kernels[..., c + u_y, c + u_x] · sharp(p − u),
                     i.e. a bright point is smeared into the kernel's picture (not its mirror image).
      "level":   list of B floats or None: blur level of each pair (FideDiff's t = (n − 1)·20 for n
                 averaged frames); None where unknown (kernels drawn from trajectories).
      "info":    list of B JSON-safe dicts describing each kernel, e.g.
                 {"kind": "camera_shake", "size": 31, "intensity": 0.5, "length_px": 15.0,
                  "anxiety": 0.04, "jerks": 1, "seed": 7, "grid": [1, 1]}
    }

:func:`make_blur_kernel` builds one and :func:`check_blur_kernel` validates one received from another
node; :func:`.convolve.blur` applies it; :func:`.convolve.kernel_map` expands it to per-pixel kernels.
"""
from __future__ import annotations

import torch


def make_blur_kernel(kernels: torch.Tensor, level: list | None = None, info: list[dict] | None = None) -> dict:
    """Wrap ``[B, gh, gw, k, k]`` kernels (or ``[B, k, k]``, taken as a 1×1 grid) as a BLUR_KERNEL."""
    kernels = kernels.detach().float().cpu()
    if kernels.ndim == 3:
        kernels = kernels[:, None, None]
    value = {"kernels": kernels.contiguous(), "level": list(level) if level is not None else None,
             "info": [dict(i) for i in info] if info is not None else [{} for _ in range(kernels.shape[0])]}
    return check_blur_kernel(value)


def check_blur_kernel(value, name: str = "blur_kernel") -> dict:
    """Raise ``ValueError`` with a readable message unless ``value`` is a valid BLUR_KERNEL."""
    if not isinstance(value, dict) or not isinstance(value.get("kernels"), torch.Tensor):
        raise ValueError(f"{name}: expected a BLUR_KERNEL dict with a 'kernels' tensor, got {type(value).__name__}")
    kernels = value["kernels"]
    if kernels.ndim != 5 or kernels.shape[-1] != kernels.shape[-2] or kernels.shape[-1] % 2 == 0 or 0 in kernels.shape:
        raise ValueError(f"{name}: 'kernels' must be [batch, gh, gw, k, k] with odd k, got {tuple(kernels.shape)}")
    if not torch.isfinite(kernels).all() or (kernels < 0).any():
        raise ValueError(f"{name}: kernels must be finite and non-negative")
    sums = kernels.sum((-2, -1))
    if not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        raise ValueError(f"{name}: every kernel must sum to 1 (got sums from {sums.min():.4f} to {sums.max():.4f})")
    batch = kernels.shape[0]
    for key in ("level", "info"):
        items = value.get(key)
        if items is not None and len(items) != batch:
            raise ValueError(f"{name}: '{key}' must have one entry per image ({batch}), got {len(items)}")
    return value


def select(value: dict, index: int) -> dict:
    """The BLUR_KERNEL of one image of the batch."""
    level = value.get("level")
    info = value.get("info")
    return {"kernels": value["kernels"][index:index + 1], "level": [level[index]] if level else None,
            "info": [info[index]] if info else [{}]}
