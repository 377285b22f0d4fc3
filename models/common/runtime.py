"""What the pack asks of the program it runs in, written once for every host.

The nodes (ComfyUI) and the WebUI extension both need a compute device, the model folders, progress
with cancel, memory hand-back and precision checks. :class:`Host` holds the standalone behaviour
(tests, command-line tools): the best torch device, model folders from ``COMFYUI_DEBLUR_MODELS``
(``os.pathsep``-separated), a tqdm bar, no interruption. Each host adapter subclasses it with the few
methods its host does differently and installs it with :func:`use` (``nodes/host.py`` for ComfyUI,
``webui/backend.py`` for the Automatic1111-family WebUIs); code below the adapters calls the module
functions here and never learns which host it is in.
"""
from __future__ import annotations

import logging
import os
from typing import Callable

import torch

ENV_MODELS = "COMFYUI_DEBLUR_MODELS"
MODEL_FOLDER = "deblur"


class Host:
    """Standalone defaults; a host adapter overrides what its host provides."""

    name = "standalone"

    def torch_device(self) -> torch.device:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    def offload_device(self) -> torch.device:
        return torch.device("cpu")

    def output_device(self) -> torch.device:
        return torch.device("cpu")

    def supports_dtype(self, dtype: torch.dtype, device: torch.device) -> bool:
        if dtype == torch.float32:
            return True
        if device.type == "cuda":
            return dtype == torch.float16 or torch.cuda.is_bf16_supported()
        return True  # CPU and MPS run both half types (slowly on the CPU)

    def free_memory(self, bytes_needed: int, device: torch.device) -> None:
        """Ask the host to unload its own models until ``bytes_needed`` fit on ``device``."""

    def available_memory(self, device: torch.device) -> int | None:
        """Bytes free on ``device`` now (None if unknown); the CPU's counts available system memory, a
        container's limit and the process's resource limits (``common/memory.py``)."""
        from .memory import device_available_bytes

        return device_available_bytes(device)

    def soft_empty_cache(self) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def is_out_of_memory(self, error: BaseException) -> bool:
        """Whether ``error`` means the device ran out of memory (the nodes then retry in smaller tiles)."""
        return isinstance(error, getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError))

    def check_interrupt(self) -> None:
        """Raise if the user asked to stop; standalone there is no one to ask."""

    def model_dirs(self) -> list[str]:
        return [p for p in os.environ.get(ENV_MODELS, "").split(os.pathsep) if p]

    def host_model_dirs(self, kind: str) -> list[str]:
        """The host's folders of another model kind (``checkpoints``, ``diffusers``: bases the user already
        has): ``COMFYUI_DEBLUR_<KIND>`` (``os.pathsep``-separated), else ``<kind>`` beside the model folders."""
        variable = os.environ.get(f"COMFYUI_DEBLUR_{kind.upper()}")
        if variable is not None:
            return [p for p in variable.split(os.pathsep) if p]
        return [os.path.join(os.path.dirname(os.path.normpath(d)), kind) for d in self.model_dirs()]

    def progress_bar(self, total: int, desc: str):
        """An object with ``update(n)`` and ``close()``."""
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, disable=os.environ.get("DEBLUR_NO_PROGRESS") == "1")


_host = Host()


def use(host: Host) -> Host:
    """Make ``host`` the one every call below goes to; returns the previous one (tests restore it)."""
    global _host
    previous, _host = _host, host
    return previous


def current() -> Host:
    return _host


def torch_device() -> torch.device:
    return _host.torch_device()


def offload_device() -> torch.device:
    return _host.offload_device()


def output_device() -> torch.device:
    return _host.output_device()


def supports_dtype(dtype: torch.dtype, device: torch.device | None = None) -> bool:
    return _host.supports_dtype(dtype, device or torch_device())


PRECISIONS = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def half_on_gpus(device: torch.device) -> torch.dtype:
    """``auto`` precision of the SD-based methods: fp16 on CUDA and Apple GPUs, fp32 on the CPU."""
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def choose_dtype(precision: str, method: str, device: torch.device | None = None,
                 auto: Callable[[torch.device], torch.dtype] = half_on_gpus) -> torch.dtype:
    """A user's precision choice (a key of :data:`PRECISIONS`) as a dtype on ``device``; a half type the
    device cannot run falls back to fp32 with a warning naming ``method``."""
    device = device or torch_device()
    dtype = PRECISIONS[precision] or auto(device)
    if not supports_dtype(dtype, device):
        logging.getLogger(__name__).warning("%s: %s is not supported on %s; using fp32", method, precision, device)
        return torch.float32
    return dtype


def free_memory(bytes_needed: int, device: torch.device) -> None:
    _host.free_memory(bytes_needed, device)


def available_memory(device: torch.device) -> int | None:
    return _host.available_memory(device)


def soft_empty_cache() -> None:
    _host.soft_empty_cache()


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is the host's out of memory: the one test every retry-in-tiles path uses."""
    return _host.is_out_of_memory(error)


def memory_manager_oom_test(manager) -> Callable[[BaseException], bool]:
    """How a ComfyUI-style memory manager (ComfyUI's ``model_management``, Forge's ``memory_management``)
    tells out of memory: its ``is_oom`` where it has one (newer ComfyUI: also the accelerator's
    asynchronous out-of-memory errors, whose pending error it clears), else its ``OOM_EXCEPTION``."""
    is_oom = getattr(manager, "is_oom", None)
    if callable(is_oom):
        return is_oom
    kind = getattr(manager, "OOM_EXCEPTION", torch.cuda.OutOfMemoryError)
    return lambda error: isinstance(error, kind)


def check_interrupt() -> None:
    _host.check_interrupt()


def model_dirs() -> list[str]:
    return _host.model_dirs()


def host_model_dirs(kind: str) -> list[str]:
    return _host.host_model_dirs(kind)


def find_in_model_dirs(find: Callable[[str], list[str]]) -> list[str]:
    """``find(root)``'s names over every model folder, in priority order, each name once."""
    names = []
    for root in model_dirs():
        names += [n for n in find(root) if n not in names]
    return names


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


class Progress:
    """The host's progress display; checks for interruption on every step."""

    def __init__(self, total: int, desc: str = ""):
        self.total = max(int(total), 1)
        self._bar = _host.progress_bar(self.total, desc)

    def update(self, n: int = 1) -> None:
        check_interrupt()
        self._bar.update(n)

    def close(self) -> None:
        self._bar.close()


def run_on_device(model: torch.nn.Module, bytes_needed: int, steps: int, desc: str, fn, move: bool = True):
    """``fn(model, device, on_step)`` with ``model`` on the compute device (``move=False``: ``fn`` moves
    the parts it needs itself) and a progress of ``steps`` (which also checks for interruption); the
    model goes back to the offload device and the cache is emptied afterwards, also on error or
    interruption."""
    device = torch_device()
    free_memory(bytes_needed, device)
    progress = Progress(steps, desc)
    try:
        return fn(model.to(device) if move else model, device, progress.update)
    finally:
        progress.close()
        model.to(offload_device())
        soft_empty_cache()


class Interrupted(Exception):
    """The user asked the host to stop (a host whose own interruption has no exception type raises this)."""
