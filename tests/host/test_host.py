"""The pack inside a real ComfyUI server: it imports, registers its nodes, and runs every bundled API workflow.

Skipped unless COMFYUI_PATH names a ComfyUI checkout with its own venv (see run_host_tests.sh).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from comfy_host import ComfyHost, write_test_png

ROOT = Path(__file__).resolve().parents[2]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
OUT = Path(__file__).resolve().parent / "out"
WORKFLOWS = sorted((ROOT / "workflows" / "api").glob("*.json"))
WORKFLOW_TIMEOUT = float(os.environ.get("COMFYUI_WORKFLOW_TIMEOUT", 600))
LOAD_IMAGE_NODES = {"LoadImage", "LoadImageMask"}
TINY_MODELS = ROOT / "tests" / "tiny_models.py"

pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="host tests need COMFYUI_PATH: a ComfyUI checkout with "
                                "a venv (or COMFYUI_PYTHON); run tests/host/run_host_tests.sh")


@pytest.fixture(scope="module")
def host():
    OUT.mkdir(exist_ok=True)
    comfy = ComfyHost(COMFYUI_PATH, ROOT, log_path=OUT / "comfyui.log")
    if TINY_MODELS.exists():  # before start-up, so the loaders list the models from the first request
        from tiny_models import prepare_models

        prepare_models(comfy.models_dir)
    with comfy:
        yield comfy


def test_pack_imports_and_registers_every_node(host, pack):
    assert not host.import_failed(), f"ComfyUI failed to import the pack:\n{host.log_tail()}"
    assert pack.NODE_CLASS_MAPPINGS, "the pack exports no NODE_CLASS_MAPPINGS"
    served = host.object_info()
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert name in served, f"node {name} missing from /object_info"
        info = served[name]
        assert info["output"] == list(cls.RETURN_TYPES), name
        for section, inputs in cls.INPUT_TYPES().items():
            for input_name, spec in inputs.items():
                assert input_name in info["input"].get(section, {}), f"{name}: {section} input {input_name} not served"
                if isinstance(spec[0], str):  # a type name; combo choices depend on the model folder
                    assert info["input"][section][input_name][0] == spec[0], f"{name}.{input_name}"


@pytest.mark.parametrize("workflow", WORKFLOWS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no workflows/api/*.json in the pack yet"))], ids=lambda p: p.stem if p else "none")
def test_workflow_runs_and_saves_sane_images(host, workflow):
    if not TINY_MODELS.exists():
        pytest.fail("tests/tiny_models.py with prepare_models(models_dir) is missing: the harness cannot give the "
                    "workflow's loaders any model")
    prompt = json.loads(workflow.read_text())
    input_sizes = [_provide_input(host, node["inputs"]["image"])
                   for node in prompt.values() if node["class_type"] in LOAD_IMAGE_NODES]

    images = host.output_images(host.wait(host.queue(prompt), WORKFLOW_TIMEOUT))

    assert images, f"{workflow.name} saved no image"
    keep = OUT / workflow.stem
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir()
    for path in images:
        shutil.copy(path, keep)
        with Image.open(path) as image:
            assert image.mode == "RGB", f"{path.name}: mode {image.mode}"
            if len(set(input_sizes)) == 1:
                assert image.size == input_sizes[0], f"{path.name}: {image.size} from a {input_sizes[0]} input"
            extrema = image.getextrema()
            assert any(low < high for low, high in extrema), f"{path.name} is one flat colour {extrema}"


def _provide_input(host, name):
    """Upload the pack's examples/<name> if it exists, else write a 64x64 test PNG under that name; returns (w, h)."""
    example = ROOT / "examples" / name
    if example.exists():
        host.upload_image(example, name)
        path = example
    else:
        path = write_test_png(host.input_dir / name)
    with Image.open(path) as image:
        return image.size
