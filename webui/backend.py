"""The one module that touches the WebUI (``modules.*``, and Forge's ``backend``): the pack's WebUI backend.

Installs :class:`WebUIHost` so device, memory, progress (``shared.state``: job, steps) and Interrupt /
Skip come from the WebUI, and gives the other modules of this package what they need of it.
"""
from __future__ import annotations

import contextlib
import os

import torch

from modules import devices, paths, script_callbacks, scripts_postprocessing, shared  # noqa: F401  (the host)
from modules.call_queue import queue_lock

from ..models.common import runtime

try:  # Forge's memory manager (ComfyUI-like); A1111 and reForge builds without it fall back
    from backend import memory_management as _forge_memory
except ImportError:
    _forge_memory = None

ScriptPostprocessing = scripts_postprocessing.ScriptPostprocessing
MODEL_DIR = os.path.join(paths.models_path, runtime.MODEL_FOLDER)
HOST_FOLDERS = {"checkpoints": "Stable-diffusion", "diffusers": "diffusers"}  # ComfyUI's kind → the WebUI's folder


class _StateProgress:
    """Steps of the current job in ``shared.state`` (what the progress bar and /sdapi/v1/progress show)."""

    def __init__(self, total: int, desc: str):
        shared.state.sampling_steps = total
        shared.state.sampling_step = 0
        shared.state.textinfo = desc

    def update(self, n: int = 1) -> None:
        shared.state.sampling_step += n

    def close(self) -> None:
        pass


class WebUIHost(runtime.Host):
    name = "WebUI"

    def torch_device(self):
        return torch.device(devices.get_device_for("deblur"))

    def free_memory(self, bytes_needed, device):
        if _forge_memory is not None:
            _forge_memory.free_memory(bytes_needed, device)

    def is_out_of_memory(self, error):
        if _forge_memory is None:
            return super().is_out_of_memory(error)
        return runtime.memory_manager_oom_test(_forge_memory)(error)

    def available_memory(self, device):
        """Forge's own count on GPUs (its cache included); otherwise the standalone one."""
        if _forge_memory is not None and device.type != "cpu" and hasattr(_forge_memory, "get_free_memory"):
            return int(_forge_memory.get_free_memory(device))
        return super().available_memory(device)

    def soft_empty_cache(self):
        devices.torch_gc()

    def check_interrupt(self):
        if shared.state.interrupted or shared.state.skipped or getattr(shared.state, "stopping_generation", False):
            raise runtime.Interrupted("interrupted" if shared.state.interrupted else "skipped")

    def model_dirs(self):
        """``models/deblur`` of the WebUI first, then any folders named in ``COMFYUI_DEBLUR_MODELS``."""
        return [MODEL_DIR] + [d for d in super().model_dirs() if d != MODEL_DIR]

    def host_model_dirs(self, kind):
        """The WebUI's own folders for SD bases: ``checkpoints`` = models/Stable-diffusion."""
        folder = HOST_FOLDERS.get(kind)
        return [os.path.join(paths.models_path, folder)] if folder else super().host_model_dirs(kind)

    def progress_bar(self, total, desc):
        return _StateProgress(total, desc)


def install() -> None:
    try:  # so users see where the weights go
        os.makedirs(MODEL_DIR, exist_ok=True)
    except OSError:
        pass
    runtime.use(WebUIHost())


@contextlib.contextmanager
def exclusive_job(name: str):
    """Run an API request as a WebUI job: after any generation in progress (the WebUI's queue lock),
    visible to /sdapi/v1/progress and stoppable by /sdapi/v1/interrupt."""
    with queue_lock:
        shared.state.begin(job=name)
        shared.state.job_count = 1  # one image: /sdapi/v1/progress then reports the steps as 0..1
        try:
            yield
        finally:
            shared.state.end()


def on_app_started(callback) -> None:
    script_callbacks.on_app_started(callback, name="diffusion-deblur")
