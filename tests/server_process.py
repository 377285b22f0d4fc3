"""A host program (ComfyUI, a WebUI) run as a local server for host-level tests: started with its log in
a file, polled until it answers, stopped (and its temporary folder removed) on exit. Standard library
only; the host runs in its own venv while the tests run in the project's.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.error
from pathlib import Path


class ServerProcess:
    label = "server"  # the host's name in messages
    error = RuntimeError  # what a dead or silent server raises

    def __init__(self, base: Path, log_path: Path, startup_timeout: float, keep: bool):
        self.base = Path(base)  # temporary folder of this run, removed on stop unless ``keep``
        self.log_path = Path(log_path)
        self.startup_timeout = startup_timeout
        self.keep = keep
        self.proc = None
        self.url = None

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        raise NotImplementedError

    def launch(self, cmd: list[str], cwd, env: dict, ready) -> None:
        """Start ``cmd`` on a free port already in ``self.url`` and wait until ``ready()`` stops raising
        a connection error."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            self._check_alive()
            try:
                ready()
                return
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    raise self.error(f"{self.label} did not answer within {self.startup_timeout:.0f} s\n{self.log_tail()}")
                time.sleep(0.5)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        return f"--- {self.label} log (tail) ---\n" + "\n".join(self.log_text().splitlines()[-lines:])

    def _check_alive(self):
        if self.proc.poll() is not None:
            raise self.error(f"{self.label} exited with code {self.proc.returncode}\n{self.log_tail()}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
