"""The pack in ComfyUI's web UI, in headless Chromium (browser_check.mjs, playwright-core driving the
system browser): the extension registers, every bundled workflow loads through the Templates API with
no missing node types, one runs from the Run button, the before/after viewer, kernel preview and
missing-model panel work, the console stays free of errors. Screenshots go to docs/images/.

Skipped unless COMFYUI_PATH names a ComfyUI checkout with a venv, and Chromium and Node.js are there;
installs playwright-core into tests/browser/node_modules (ignored by git) on first use.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "host"))
from comfy_host import ComfyHost  # noqa: E402

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
NODE = shutil.which("node")
NPM = shutil.which("npm")
SCREENSHOTS = Path(os.environ.get("DEBLUR_SCREENSHOTS", ROOT / "docs" / "images"))
OUT = HERE / "out"
RUN_PREFERENCE = ["quickstart_deblur", "hidiff_deblur"]  # the first one present is run from the UI
ALSO_RUN = ["synthetic_blur_compare", "deblurdiff_lkpn_kernels"]  # run too where present: viewer, kernels, LKPN maps
VIEWER_NODES = {"DeblurCompare"}
KERNEL_NODES = {"BlurKernelPreview", "LKPNStep"}
RUN_TIMEOUT_S = float(os.environ.get("COMFYUI_WORKFLOW_TIMEOUT", 600))
# Another frontend build to check against (the static/ folder of a comfyui-frontend-package wheel).
FRONTEND_ROOT = os.environ.get("COMFYUI_FRONTEND_ROOT")

pytestmark = [
    pytest.mark.skipif(not COMFYUI_PATH, reason="browser test needs COMFYUI_PATH (a ComfyUI checkout with a venv)"),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"browser test needs Chromium ({CHROMIUM} not found)"),
    pytest.mark.skipif(NODE is None or NPM is None, reason="browser test needs Node.js and npm"),
]


def playwright_installed() -> bool:
    if (HERE / "node_modules" / "playwright-core").is_dir():
        return True
    run = subprocess.run([NPM, "install", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True, timeout=300)
    return run.returncode == 0 and (HERE / "node_modules" / "playwright-core").is_dir()


def workflow_types(name: str) -> set[str]:
    return {node["type"] for node in json.loads((ROOT / "workflows" / f"{name}.json").read_text())["nodes"]}


def test_the_ui_loads_runs_and_shows_the_pack():
    if not playwright_installed():
        pytest.skip("playwright-core could not be installed (npm install in tests/browser failed)")
    workflows = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    runs = [next(name for name in RUN_PREFERENCE if name in workflows)]
    runs += [name for name in ALSO_RUN if name in workflows]
    OUT.mkdir(exist_ok=True)
    extra_args = ["--front-end-root", FRONTEND_ROOT] if FRONTEND_ROOT else []
    host = ComfyHost(COMFYUI_PATH, ROOT, log_path=OUT / "comfyui.log", extra_args=extra_args)
    from tiny_models import prepare_models

    prepare_models(host.models_dir)
    # An existing user's profile, so the frontend's first-run probes find their files instead of 404s.
    profile = host.base / "user" / "default"
    for folder in ("workflows", "subgraphs"):
        (profile / folder).mkdir(parents=True, exist_ok=True)
    (profile / "user.css").write_text("")
    (profile / "comfy.templates.json").write_text("[]")
    with host:
        config = {
            "url": host.url, "pack": host.pack_name, "extension": "diffusion-deblur", "chromium": CHROMIUM,
            "workflows": workflows, "run_timeout_ms": RUN_TIMEOUT_S * 1000,
            "runs": [{"workflow": name, "expect_viewer": bool(workflow_types(name) & VIEWER_NODES),
                      "expect_kernels": bool(workflow_types(name) & KERNEL_NODES)} for name in runs],
            "missing_model": {"workflow": "hidiff_deblur", "node_type": "HIDiffLoader", "widget_index": 0,
                              "value": "HI_Diff_RealBlur_J"},
            "screenshots": str(SCREENSHOTS), "result": str(OUT / "result.json"),
        }
        (OUT / "config.json").write_text(json.dumps(config, indent=2))
        check = subprocess.run([NODE, str(HERE / "browser_check.mjs"), str(OUT / "config.json")], cwd=HERE,
                               capture_output=True, text=True, timeout=RUN_TIMEOUT_S + 300)
    assert (OUT / "result.json").exists(), f"the browser check wrote no result:\n{check.stdout}\n{check.stderr}"
    result = json.loads((OUT / "result.json").read_text())
    assert not result["failures"], "\n".join(result["failures"])
    assert check.returncode == 0, check.stderr
    assert result["extension"] is True
    assert set(result["templates"]) == set(workflows)
    assert [r["workflow"] for r in result["runs"]] == runs
    assert all(r["done"] and not r["error"] for r in result["runs"])
