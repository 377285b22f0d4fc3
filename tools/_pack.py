"""Load the pack from a script the way ComfyUI does (by location, relative imports inside)."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "comfyui_deblur_pack"


def pack_module(name: str):
    if NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(NAME, os.path.join(ROOT, "__init__.py"), submodule_search_locations=[ROOT])
        module = importlib.util.module_from_spec(spec)
        sys.modules[NAME] = module
        spec.loader.exec_module(module)
    return importlib.import_module(f"{NAME}.{name}")
