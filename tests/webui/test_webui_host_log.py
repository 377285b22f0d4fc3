"""The harness's start-up log check (run without a WebUI): it finds an error report of our extension and
ignores the host's own (Forge's snapshot logs one for a built-in extension missing joblib)."""
from __future__ import annotations

import shutil

from webui_host import WebUIHost

HOST_ERROR = """*** Error loading script: soft_inpainting.py
    Traceback (most recent call last):
      File "/forge/extensions-builtin/soft-inpainting/scripts/soft_inpainting.py", line 10, in <module>
    ModuleNotFoundError: No module named 'joblib'
---
"""


def test_only_errors_of_our_extension_are_reported(tmp_path):
    host = WebUIHost(tmp_path, tmp_path, extension_name="diffusion-deblur-test", log_path=tmp_path / "webui.log")
    try:
        host.log_path.write_text(HOST_ERROR + "Startup time: 10.8s\n")
        assert host.extension_errors("sd_webui_diffusion_deblur") == []
        ours = (f"*** Error loading script: deblur.py\n    Traceback (most recent call last):\n"
                f"      File \"{host.extension_dir}/scripts/deblur.py\", line 20, in <module>\n"
                f"    ImportError: attempted relative import\n---\n")
        host.log_path.write_text(HOST_ERROR + ours)
        assert len(host.extension_errors("sd_webui_diffusion_deblur")) >= 1
        host.log_path.write_text("Traceback (most recent call last):\n  File \"x/sd_webui_diffusion_deblur/webui/api.py\"\n")
        assert host.extension_errors("sd_webui_diffusion_deblur")
    finally:
        shutil.rmtree(host.data, ignore_errors=True)
