"""Diffusion-based motion deblurring for ComfyUI (HI-Diff, with DeblurDiff, FideDiff and OSDD to come).

ComfyUI imports this folder as a package under whatever name the folder has; every import inside is
relative for that reason.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
