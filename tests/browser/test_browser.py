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
from conftest import pack_module  # noqa: E402

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
NODE = shutil.which("node")
NPM = shutil.which("npm")
SCREENSHOTS = Path(os.environ.get("DEBLUR_SCREENSHOTS", ROOT / "docs" / "images"))
OUT = HERE / "out"
RUN_PREFERENCE = ["quickstart_deblur", "hidiff_deblur"]  # the first one present is run from the UI
ALSO_RUN = ["deblur_synthetic_blur_compare", "deblurdiff_lkpn_kernels"]  # run too where present: viewer, kernels, LKPN maps
RELOADED = "deblur_synthetic_blur_compare"  # reloaded after its run: outputs back through onNodeOutputsUpdated
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


def start_host(extra_args: list[str], log_name: str) -> ComfyHost:
    """A ComfyUI with the pack and the tiny test models, and an existing user's profile, so the
    frontend's first-run probes find their files instead of 404s."""
    host = ComfyHost(COMFYUI_PATH, ROOT, log_path=OUT / log_name, extra_args=extra_args)
    from tiny_models import prepare_models

    prepare_models(host.models_dir)
    profile = host.base / "user" / "default"
    for folder in ("workflows", "subgraphs"):
        (profile / folder).mkdir(parents=True, exist_ok=True)
    (profile / "user.css").write_text("")
    (profile / "comfy.templates.json").write_text("[]")
    return host


def browser_check(config: dict, name: str) -> dict:
    """Run browser_check.mjs with ``config``; its result (failures asserted empty by the callers)."""
    path, result = OUT / f"{name}_config.json", OUT / f"{name}_result.json"
    config = {**config, "result": str(result)}
    path.write_text(json.dumps(config, indent=2))
    check = subprocess.run([NODE, str(HERE / "browser_check.mjs"), str(path)], cwd=HERE,
                           capture_output=True, text=True, timeout=RUN_TIMEOUT_S + 300)
    assert result.exists(), f"the browser check wrote no result:\n{check.stdout}\n{check.stderr}"
    report = json.loads(result.read_text())
    report["returncode"], report["stderr"] = check.returncode, check.stderr
    return report


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
    with start_host(extra_args, "comfyui.log") as host:
        config = {
            "url": host.url, "pack": host.pack_name, "extension": "diffusion-deblur", "chromium": CHROMIUM,
            "workflows": workflows, "run_timeout_ms": RUN_TIMEOUT_S * 1000,
            "runs": [{"workflow": name, "expect_viewer": bool(workflow_types(name) & VIEWER_NODES),
                      "expect_kernels": bool(workflow_types(name) & KERNEL_NODES)} for name in runs],
            "missing_model": {"workflow": "hidiff_deblur", "node_type": "HIDiffLoader", "widget_index": 0,
                              "value": "HI_Diff_RealBlur_J"},
            "screenshots": str(SCREENSHOTS), "thumbnails": str(OUT / "thumbnails"),
            "reload": {"workflow": RELOADED, "viewer_type": "DeblurCompare", "kernel_type": "BlurKernelPreview"}
            if RELOADED in runs else None,
        }
        result = browser_check(config, "ui")
    assert not result["failures"], "\n".join(result["failures"])
    assert result["returncode"] == 0, result["stderr"]
    assert result["extension"] is True
    assert set(result["templates"]) == set(workflows)
    assert [r["workflow"] for r in result["runs"]] == runs
    assert all(r["done"] and not r["error"] for r in result["runs"])
    if RELOADED in runs:  # a finished run loaded after a reload shows its outputs again, in both modes
        assert [r["mode"] for r in result["reloaded"]] == ["vue", "classic"]


FRONTENDS = [("host", None)] + ([("other", FRONTEND_ROOT)] if FRONTEND_ROOT else [])


@pytest.mark.parametrize("frontend", FRONTENDS, ids=[f[0] for f in FRONTENDS])
def test_every_workflow_opens_clean(frontend):
    """Every bundled workflow, opened as the Templates menu opens it, in classic and Nodes 2.0 (Vue)
    mode: no node box intersects another, every title is visible (the view is fitted, nothing under
    the menus), and a loader without its model keeps its panel inside its own box; checked with the
    models present and with every loader pointed at a missing one. Screenshots: tests/browser/out/."""
    if not playwright_installed():
        pytest.skip("playwright-core could not be installed (npm install in tests/browser failed)")
    label, root = frontend
    workflows = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    loaders = {kind: spec["widget"] for kind, spec in pack_module("nodes.weights_help").LOADERS.items()}
    OUT.mkdir(exist_ok=True)
    failures = []
    with start_host(["--front-end-root", root] if root else [], f"comfyui_layout_{label}.log") as host:
        for mode, vue in (("classic", False), ("vue", True)):
            name = f"layout_{label}_{mode}"
            config = {
                "url": host.url, "pack": host.pack_name, "extension": "diffusion-deblur", "chromium": CHROMIUM,
                "workflows": workflows, "runs": [], "missing_model": None, "screenshots": str(OUT / name),
                "settings": {"Comfy.VueNodes.Enabled": vue},
                # The host's frontend 1.27 draws no DOM widgets on its (then experimental) Vue nodes.
                "layout": {"loaders": loaders, "missing_value": "not_here.safetensors", "label": f"{label}_{mode}",
                           "expect_panels": not vue or root is not None},
            }
            result = browser_check(config, name)
            assert set(result.get("layout", {})) == set(workflows), f"{name}: not every workflow was measured"
            failures += result["failures"]
    assert not failures, "\n".join(failures)
