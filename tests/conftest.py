"""Load the pack the way ComfyUI does: by file location, as a package whose name is the folder's
(here an arbitrary hyphenated one, which no absolute import could name)."""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_NAME = "comfyui-deblur-under-test"
DATA = os.path.join(ROOT, "tests", "data")
os.environ.setdefault("DEBLUR_NO_PROGRESS", "1")
# The tests run tiny models, where thread start-up costs more than it saves (10-40x on a loaded
# 2-core machine); one thread also makes float results independent of the machine's core count.
torch.set_num_threads(1)


def load_pack():
    if PACK_NAME in sys.modules:
        return sys.modules[PACK_NAME]
    spec = importlib.util.spec_from_file_location(PACK_NAME, os.path.join(ROOT, "__init__.py"),
                                                  submodule_search_locations=[ROOT])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACK_NAME] = module
    spec.loader.exec_module(module)
    return module


def pack_module(name: str):
    """A sub-module of the loaded pack, e.g. ``pack_module("models.hidiff")``."""
    load_pack()
    return importlib.import_module(f"{PACK_NAME}.{name}")


@pytest.fixture(scope="session")
def pack():
    return load_pack()


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """An empty model folder that the pack searches (outside ComfyUI, via the environment)."""
    folder = tmp_path / "models" / "deblur"
    folder.mkdir(parents=True)
    monkeypatch.setenv("COMFYUI_DEBLUR_MODELS", str(folder))
    return folder
