"""OSDD (Liu et al. 2025): one-step motion deblurring on SD 2.1 with the enhanced VAE (eVAE, decoder
skips from the blurry image's encoder) and the dynamic dual adapter (two UNet LoRAs mixed per image).

* :mod:`.evae` — the eVAE: skip blocks, skip-carrying encode/decode, tiling with skips.
"""
from .evae import EVAE, SkipBlock, SkipMismatch, Skips

__all__ = ["EVAE", "SkipBlock", "SkipMismatch", "Skips"]
