"""The frontend extension's modules under Node's test runner (tests/js/*.test.js), fed with payloads
the Python side really produces (kernel previews, weights help). Skipped where ``node`` is missing.

The modules are copied into a throw-away tree shaped like the frontend's web root: js/ as
extensions/pack/, stand-ins for scripts/app.js and scripts/api.js, and the tests beside them.
"""
import json
import os
import shutil
import subprocess

import pytest
import torch

from conftest import ROOT, pack_module

NODE = shutil.which("node")
APP_STUB = """export const app = {
  registerExtension: (extension) => globalThis.__registered.push(extension),
  graph: { nodes: [] },
  getRandParam: () => "",
};
"""
API_STUB = """export const api = {
  fetchApi: (path) => globalThis.__fetch(path),
  apiURL: (path) => "/api" + path,
};
"""


def kernel_payload() -> dict:
    kernel_ui = pack_module("nodes.kernel_ui")
    line = torch.zeros(13, 13)
    line[6, :] = 1.0
    box = torch.zeros(13, 13)
    box[5:8, 5:8] = 1.0
    grid = box.expand(3, 3, 13, 13).clone()
    grid[1, 2] = 0
    grid[1, 2, 6, 6] = 1.0
    first = {"kernels": (line / line.sum())[None, None, None], "level": None,
             "info": [{"kind": "linear", "size": 13, "length_px": 12.0}]}
    second = {"kernels": (grid / grid.sum((-2, -1), keepdim=True))[None], "level": [40.0], "info": [{}]}
    return {"deblur_kernels": kernel_ui.kernel_ui(first)["deblur_kernels"] + kernel_ui.kernel_ui(second)["deblur_kernels"]}


def weights_help() -> dict:
    help_module = pack_module("nodes.weights_help")
    return {**help_module.weights_help(), "model_folders": ["/srv/comfy/models/deblur", "/mnt/extra/deblur"]}


@pytest.mark.skipif(NODE is None, reason="node (Node.js) is not installed")
def test_frontend_modules_under_node(tmp_path):
    shutil.copytree(os.path.join(ROOT, "js"), tmp_path / "extensions" / "pack")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(APP_STUB)
    (tmp_path / "scripts" / "api.js").write_text(API_STUB)
    (tmp_path / "package.json").write_text('{"type": "module"}')
    shutil.copytree(os.path.join(ROOT, "tests", "js"), tmp_path / "tests")
    (tmp_path / "tests" / "kernel_payload.json").write_text(json.dumps(kernel_payload()))
    (tmp_path / "tests" / "weights_help.json").write_text(json.dumps(weights_help()))
    tests = sorted(str(p) for p in (tmp_path / "tests").glob("*.test.js"))
    assert tests
    run = subprocess.run([NODE, "--test", *tests], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "# fail 0" in run.stdout and "# pass 0" not in run.stdout, run.stdout
