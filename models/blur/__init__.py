"""Motion-blur synthesis: camera-shake (Boracchi & Foi 2012) and linear kernels, sub-pixel
rasterised; per-image and spatially varying convolution; GoPro-style frame averaging with FideDiff's
blur level; camera response, noise and JPEG; dead-leaves images. Plain PyTorch (Pillow for JPEG).

The ``BLUR_KERNEL`` type passed between nodes is documented in :mod:`.blur_kernel`.
"""
from .trajectory import (KernelInfo, camera_shake_kernel, kernel_centroid, kernel_spread, linear_kernel,
                         random_kernel, rasterize, shake_trajectory)
from .convolve import BORDERS, blur, convolve, grid_weights, kernel_map
from .blur_kernel import check_blur_kernel, make_blur_kernel, select
from .frames import FramePair, average_frames, blur_level, frame_pairs, frames_for_level
from .degrade import add_noise, from_linear, jpeg, to_linear
from .synthesis import KINDS, BlurMix, BlurSettings, degrade, draw_kernels, synthesize
from .dead_leaves import dead_leaves

__all__ = [
    "KernelInfo", "camera_shake_kernel", "kernel_centroid", "kernel_spread", "linear_kernel", "random_kernel",
    "rasterize", "shake_trajectory", "BORDERS", "blur", "convolve", "grid_weights", "kernel_map",
    "check_blur_kernel", "make_blur_kernel", "select", "FramePair", "average_frames", "blur_level",
    "frame_pairs", "frames_for_level", "add_noise", "from_linear", "jpeg", "to_linear", "KINDS",
    "BlurMix", "BlurSettings", "degrade", "draw_kernels", "synthesize", "dead_leaves",
]
