"""DeblurDiff (Kong et al., 2025): real-world deblurring with Stable Diffusion 2.1 guided, at every
denoising step, by a Latent Kernel Prediction Network (LKPN) whose per-pixel kernels refine the
blurry image's latent through Element-wise Adaptive Convolution (EAC) before it conditions a
ControlNet.

Loads the official ``model.pth`` (or the pack's ``.safetensors``) with sizes from shapes; runs on
CPU, CUDA and MPS in plain PyTorch (the official EAC needs CUDA and cupy).
"""
from .eac import eac, eac_reference
from .lkpn import LKPN
from .model import ATTENTION_WINDOW, PARTS, DeblurDiff, DeblurDiffConfig
from .loader import (find_deblurdiff_models, is_deblurdiff_file, load_deblurdiff, model_states, pack_to_official,
                     read_deblurdiff, save_deblurdiff)
from .pipeline import DEFAULT_NEGATIVE, SamplingOptions, deblur, steps_per_image

__all__ = [
    "eac", "eac_reference", "LKPN", "ATTENTION_WINDOW", "PARTS", "DeblurDiff", "DeblurDiffConfig",
    "find_deblurdiff_models", "is_deblurdiff_file", "load_deblurdiff", "model_states", "pack_to_official",
    "read_deblurdiff", "save_deblurdiff", "DEFAULT_NEGATIVE", "SamplingOptions", "deblur", "steps_per_image",
]
