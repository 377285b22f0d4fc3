"""Diffusion-based motion deblurring for ComfyUI: HI-Diff (official weights, and a bundled model that needs
no download), DeblurDiff (official weights), FideDiff and OSDD (one-step methods implemented from their
papers, with training tools), a blur lab and the ``BLUR_KERNEL`` type; the same folder is also an
Automatic1111/Forge extension (``scripts/``, ``webui/``).

ComfyUI imports this folder as a package under whatever name the folder has; every import inside is
relative for that reason. Imported as a plain module (pytest collecting a checkout whose folder name is
no valid package name, such as ``comfyui-diffusion-deblur``), there is no package to import from: the
pack then registers nothing instead of failing.
"""
if __package__:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
else:
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}

WEB_DIRECTORY = "./js"

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
