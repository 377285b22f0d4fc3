"""ComfyUI node adapters. Thin: they validate inputs, convert IMAGE tensors and call ``models/``."""
from . import hidiff

NODE_CLASS_MAPPINGS = {**hidiff.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {**hidiff.NODE_DISPLAY_NAME_MAPPINGS}
