"""OSDD (Liu et al. 2025): one-step motion deblurring on SD 2.1 with the enhanced VAE (eVAE, decoder
skips from the blurry image's encoder) and the dynamic dual adapter (two UNet LoRAs mixed per image).

* :mod:`.evae` — the eVAE: skip blocks, skip-carrying encode/decode, tiling with skips;
* :mod:`.dda` — the dual adapter's γ mixing and its gate;
* :mod:`.model` — the one-step model and the whole deblurring pass;
* :mod:`.weights` — OSDD's pack ``.safetensors`` (its parts only; the base is the user's SD 2.x).
"""
from .evae import EVAE, SkipBlock, SkipMismatch, Skips
from .dda import ADAPTERS, DDAGate, check_gamma, set_gamma
from .model import DEFAULT_PROMPT, OSDD, OSDDConfig, Tiling, deblur
from .weights import find_osdd_models, is_osdd_file, load_osdd, osdd_state, read_osdd, save_osdd

__all__ = ["EVAE", "SkipBlock", "SkipMismatch", "Skips", "ADAPTERS", "DDAGate", "check_gamma", "set_gamma",
           "DEFAULT_PROMPT", "OSDD", "OSDDConfig", "Tiling", "deblur", "find_osdd_models", "is_osdd_file", "load_osdd",
           "osdd_state", "read_osdd", "save_osdd"]
