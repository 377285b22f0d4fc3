"""Run a real, headless Automatic1111-family WebUI (Forge first) with this repository installed as an
extension, for host-level tests. Standard library only: the tests run in the project's venv while the
WebUI runs in its own (``WEBUI_PYTHON``, default ``<checkout>/venv/bin/python``).

Each run gets its own ``--data-dir`` (extensions, models, outputs, settings) and a free port, so runs
neither touch the checkout's user data nor clash.

    with WebUIHost("/work/forge", repo_root) as webui:
        reply = webui.post("/deblur/v1/deblur", {...})
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server_process import ServerProcess, free_port  # noqa: E402

COPY_IGNORE = shutil.ignore_patterns(".git", "venv", ".venv", "__pycache__", "*.pyc", ".pytest_cache", "node_modules", "out")
# Headless, offline, CPU: the launch line (no SD checkpoint is needed for Extras).
LAUNCH_ARGS = ["--skip-prepare-environment", "--skip-install", "--skip-python-version-check", "--skip-torch-cuda-test",
               "--no-download-sd-model", "--use-cpu", "all", "--always-cpu", "--api"]
ERROR_START = re.compile(r"^\*\*\* |Traceback \(most recent call last\)|^ERROR|Error loading script")


class WebUIError(RuntimeError):
    """The WebUI died, did not start, or answered a request with an error."""


class WebUIHost(ServerProcess):
    label = "the WebUI"
    error = WebUIError

    def __init__(self, webui_path, extension_path, python=None, extension_name=None, log_path=None,
                 startup_timeout=240.0, keep=False, ui=False, extra_args=()):
        self.webui_path = Path(webui_path).resolve()
        self.extension_path = Path(extension_path).resolve()
        self.python = Path(python or os.environ.get("WEBUI_PYTHON") or self.webui_path / "venv/bin/python")
        self.extension_name = extension_name or f"diffusion-deblur-{uuid.uuid4().hex[:4]}"
        self.ui = ui  # False: --nowebui (API only); True: the gradio UI too, on the same port
        self.extra_args = list(extra_args)
        self.data = Path(tempfile.mkdtemp(prefix="webui-host-"))
        (self.data / "extensions").mkdir()
        (self.data / "models").mkdir()
        super().__init__(self.data, Path(log_path) if log_path else self.data / "webui.log", startup_timeout, keep)

    @property
    def models_dir(self) -> Path:
        return self.data / "models"

    @property
    def extension_dir(self) -> Path:
        return self.data / "extensions" / self.extension_name

    def start(self):
        if not self.python.exists():
            raise WebUIError(f"WebUI python {self.python} not found (set WEBUI_PYTHON)")
        shutil.copytree(self.extension_path, self.extension_dir, ignore=COPY_IGNORE)
        self.url = f"http://127.0.0.1:{free_port()}"
        # The UI serves its own scripts from the checkout, which gradio allows only inside --data-dir by default.
        ui = ["--gradio-allowed-path", str(self.webui_path)] if self.ui else ["--nowebui"]
        cmd = [str(self.python), "launch.py", *LAUNCH_ARGS, *ui, "--data-dir", str(self.data),
               "--port", self.url.rsplit(":", 1)[1], "--server-name", "127.0.0.1", *self.extra_args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
        self.launch(cmd, self.webui_path, env, lambda: self.get("/deblur/v1/models"))

    # --- HTTP -----------------------------------------------------------------------------------

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as reply:
            return json.load(reply)

    def post(self, path, payload, timeout=600.0) -> tuple[int, dict]:
        """(status, JSON body); an HTTP error status is returned, not raised."""
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return reply.status, json.load(reply)
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    # --- server log -----------------------------------------------------------------------------

    def extension_errors(self, package: str) -> list[str]:
        """Error reports in the log (``*** Error ...`` blocks, tracebacks) that involve this extension:
        its folder, its name or the package name its entry point loads it under."""
        lines = self.log_text().splitlines()
        marks = (str(self.extension_dir), self.extension_name, package)
        errors = []
        for i, line in enumerate(lines):
            if ERROR_START.search(line):
                block = "\n".join(lines[i:i + 40])
                if any(mark in block for mark in marks):
                    errors.append(block)
        return errors
