"""Run a real, headless ComfyUI server with a node pack installed, for host-level tests.

Standard library only: the tests run in the project's venv while the server runs in ComfyUI's
own (``COMFYUI_PYTHON``, default ``<comfy_path>/venv/bin/python``).

    with ComfyHost("/work/comfyui", pack_root) as host:
        prompt_id = host.queue(workflow)
        images = host.output_images(host.wait(prompt_id))
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server_process import ServerProcess, free_port  # noqa: E402

COPY_IGNORE = shutil.ignore_patterns(".git", "venv", ".venv", "__pycache__", "*.pyc", ".pytest_cache", "node_modules", "out")
CANNOT_IMPORT = re.compile(r"Cannot import (.+?) module for custom nodes: (.*)")
IMPORT_FAILED = re.compile(r"seconds \(IMPORT FAILED\): (.+)")


class ComfyError(RuntimeError):
    """The server refused a prompt, failed to run it, or died."""


class ComfyHost(ServerProcess):
    label = "ComfyUI"
    error = ComfyError

    def __init__(self, comfy_path, pack_path, python=None, pack_name=None, log_path=None,
                 startup_timeout=180.0, keep=False, extra_args=()):
        self.comfy_path = Path(comfy_path).resolve()
        self.pack_path = Path(pack_path).resolve()
        self.python = Path(python or os.environ.get("COMFYUI_PYTHON") or self.comfy_path / "venv/bin/python")
        self.pack_name = pack_name or f"deblur-pack-{uuid.uuid4().hex[:4]}"
        self.extra_args = list(extra_args)  # more main.py arguments, e.g. ["--front-end-root", DIR]
        # The base directory exists from construction on, so callers can fill models/ and input/
        # before the server starts.
        base = Path(tempfile.mkdtemp(prefix="comfy-host-"))
        for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
            (base / sub).mkdir()
        super().__init__(base, Path(log_path) if log_path else base / "comfyui.log", startup_timeout, keep)

    @property
    def models_dir(self) -> Path:
        return self.base / "models"

    @property
    def input_dir(self) -> Path:
        return self.base / "input"

    @property
    def pack_dir(self) -> Path:
        return self.base / "custom_nodes" / self.pack_name

    def start(self):
        if not self.python.exists():
            raise ComfyError(f"ComfyUI python {self.python} not found (set COMFYUI_PYTHON)")
        shutil.copytree(self.pack_path, self.pack_dir, ignore=COPY_IGNORE)
        self.url = f"http://127.0.0.1:{free_port()}"
        cmd = [str(self.python), str(self.comfy_path / "main.py"), "--cpu", "--disable-auto-launch",
               "--listen", "127.0.0.1", "--port", self.url.rsplit(":", 1)[1], "--base-directory", str(self.base),
               # The default database lives in the checkout; keep this run self-contained.
               "--database-url", f"sqlite:///{self.base / 'user' / 'comfyui.db'}", *self.extra_args]
        self.launch(cmd, self.base, {**os.environ, "PYTHONUNBUFFERED": "1"}, lambda: self._get("/system_stats"))

    # --- HTTP API -------------------------------------------------------------------------------

    def object_info(self) -> dict:
        return self._get("/object_info")

    def upload_image(self, path, name=None) -> str:
        """Upload a file into input/ (``name`` may hold a sub-folder); returns the name LoadImage takes."""
        subfolder, _, filename = (name or Path(path).name).rpartition("/")
        boundary = uuid.uuid4().hex
        fields = {"type": "input", "subfolder": subfolder, "overwrite": "true"}
        body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                        for k, v in fields.items())
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n").encode()
        body += Path(path).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        reply = self._request("/upload/image", body, f"multipart/form-data; boundary={boundary}")
        return f"{reply['subfolder']}/{reply['name']}" if reply["subfolder"] else reply["name"]

    def queue(self, prompt: dict) -> str:
        """Queue an API-format workflow; raises ComfyError with the validation errors if refused."""
        try:
            reply = self._request("/prompt", json.dumps({"prompt": prompt, "client_id": "comfy-host"}).encode())
        except urllib.error.HTTPError as e:
            raise ComfyError(_describe_refusal(json.load(e))) from None
        return reply["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> dict:
        """Block until the prompt has run; returns its history entry, raises ComfyError if it failed."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self._get(f"/history/{prompt_id}").get(prompt_id)
            if entry and entry["status"].get("completed"):
                return entry
            if entry and entry["status"].get("status_str") == "error":
                raise ComfyError(f"{_describe_failure(entry)}\n{self.log_tail()}")
            self._check_alive()
            if time.monotonic() > deadline:
                raise ComfyError(f"prompt {prompt_id} did not finish within {timeout:.0f} s\n{self.log_tail()}")
            time.sleep(0.2)

    def output_images(self, history: dict, kind: str | None = "output") -> list[Path]:
        """Files of the images a finished prompt produced (``kind=None``: previews in temp/ too)."""
        return [self.base / image["type"] / image["subfolder"] / image["filename"]
                for node_output in history["outputs"].values()
                for image in node_output.get("images", [])
                if kind is None or image["type"] == kind]

    # --- server log -----------------------------------------------------------------------------

    def import_failed(self) -> dict[str, str]:
        """Custom-node modules of this host that ComfyUI failed to load: {module path: reason}.

        Built-in comfy_extras failures (e.g. a missing torchaudio) use the same log lines and
        are left out.
        """
        ours = str(self.base / "custom_nodes")
        failed = {}
        for line in self.log_text().splitlines():
            if m := CANNOT_IMPORT.search(line):
                failed[m[1]] = m[2]
            elif m := IMPORT_FAILED.search(line):
                failed.setdefault(m[1].strip(), "IMPORT FAILED (see the log)")
        return {path: reason for path, reason in failed.items() if path.startswith(ours)}

    # --- internals ------------------------------------------------------------------------------

    def _get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as reply:
            return json.load(reply)

    def _request(self, path, body, content_type="application/json"):
        request = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": content_type})
        with urllib.request.urlopen(request, timeout=60) as reply:
            return json.load(reply)


def _describe_refusal(reply: dict) -> str:
    """/prompt answers 400 with {"error": {...}, "node_errors": {node_id: {"class_type", "errors"}}}."""
    lines = [f"prompt refused: {reply['error']['message']} {reply['error'].get('details', '')}".rstrip()]
    for node_id, node in reply.get("node_errors", {}).items():
        for error in node["errors"]:
            lines.append(f"  node {node_id} ({node['class_type']}): {error['message']}: {error['details']}")
    return "\n".join(lines)


def _describe_failure(entry: dict) -> str:
    for kind, message in entry["status"]["messages"]:
        if kind == "execution_error":
            return (f"node {message['node_id']} ({message['node_type']}) raised {message['exception_type']}: "
                    f"{message['exception_message']}\n" + "".join(message["traceback"]))
    return f"prompt failed: {json.dumps(entry['status'])}"


def write_test_png(path, width: int = 64, height: int = 64) -> Path:
    """An RGB PNG with gradients and texture (never one flat colour), written with the stdlib."""
    rows = b"".join(b"\0" + bytes(c for x in range(width)
                                  for c in (255 * x // max(width - 1, 1), 255 * y // max(height - 1, 1), (x ^ y) * 8 & 255))
                    for y in range(height))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    return path
