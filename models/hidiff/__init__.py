"""HI-Diff (Chen et al., NeurIPS 2023): a Restormer-style transformer guided by a prior that a tiny
latent diffusion model produces, fused through the Hierarchical Integration Module (HIM).

Module and parameter names follow the official release, so its ``net_g.pth``, ``net_le_dm.pth`` and
``net_d.pth`` load with ``strict=True``; all sizes are read from the checkpoint's shapes.
"""
from .transformer import Transformer, TransformerConfig
from .latent_encoder import LatentEncoder, LatentEncoderConfig
from .denoiser import MixerDenoiser, SimpleDenoiser, build_denoiser
from .diffusion import PriorSampler, SamplerConfig
from .model import HIDiff
from .loader import load_hidiff, save_hidiff, find_hidiff_models
from .pipeline import deblur, compute_priors, restore_with_priors, steps_per_image

__all__ = [
    "Transformer", "TransformerConfig", "LatentEncoder", "LatentEncoderConfig", "MixerDenoiser",
    "SimpleDenoiser", "build_denoiser", "PriorSampler", "SamplerConfig", "HIDiff", "load_hidiff",
    "save_hidiff", "find_hidiff_models", "deblur", "compute_priors", "restore_with_priors", "steps_per_image",
]
