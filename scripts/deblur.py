"""Entry point for the Automatic1111-family WebUIs (Forge, Forge Neo, reForge, A1111).

The WebUI executes every ``scripts/*.py`` of an extension as a lone module, so this file loads the
repository by location as a package (whatever the folder is called; its ComfyUI ``__init__`` is not
run) and exposes the Extras step, which also registers the API route.
"""
import importlib
import os
import sys
import types

PACKAGE = "sd_webui_diffusion_deblur"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

if PACKAGE not in sys.modules:
    package = types.ModuleType(PACKAGE, "The diffusion-deblur repository, loaded by the WebUI.")
    package.__path__ = [ROOT]
    sys.modules[PACKAGE] = package

_extras_step = importlib.import_module(f"{PACKAGE}.webui.extras_step")
_extras_step.setup()
DeblurExtrasStep = _extras_step.DeblurExtrasStep
