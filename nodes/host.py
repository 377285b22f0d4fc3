"""The one module that touches ComfyUI.

Inside ComfyUI it registers the ``deblur`` model folder (so ``extra_model_paths.yaml`` entries named
``deblur`` work too), and takes device, precision, memory, progress and interruption from the host.
Imported anywhere else (tests, scripts) it falls back to: the best torch device, the model folders in
the environment variable ``COMFYUI_DEBLUR_MODELS`` (``os.pathsep``-separated), a tqdm progress bar, and
no interruption.
"""
from __future__ import annotations

import os

import torch

MODEL_FOLDER = "deblur"
ENV_MODELS = "COMFYUI_DEBLUR_MODELS"

try:  # ComfyUI's own top-level modules; absent outside the host
    import comfy.model_management as _mm
    import comfy.utils as _comfy_utils
    import folder_paths as _folder_paths
except ImportError:
    _mm = _comfy_utils = _folder_paths = None

IN_COMFYUI = _mm is not None


def register_model_folder() -> None:
    if IN_COMFYUI:
        _folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(_folder_paths.models_dir, MODEL_FOLDER), is_default=True)


register_model_folder()


def model_dirs() -> list[str]:
    """Folders searched for models, in priority order."""
    if IN_COMFYUI:
        return _folder_paths.get_folder_paths(MODEL_FOLDER)
    return [p for p in os.environ.get(ENV_MODELS, "").split(os.pathsep) if p]


def resolve_model(name: str) -> str:
    """The full path of a model listed by name (relative to one of :func:`model_dirs`)."""
    if os.path.isabs(name) and os.path.exists(name):
        return name
    for root in model_dirs():
        path = os.path.join(root, *name.split("/"))
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"model {name!r} not found in {model_dirs() or 'any model folder'}; "
                            f"put it under models/{MODEL_FOLDER}/ (see the README's weights table)")


def torch_device() -> torch.device:
    if IN_COMFYUI:
        return _mm.get_torch_device()
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def offload_device() -> torch.device:
    return _mm.unet_offload_device() if IN_COMFYUI else torch.device("cpu")


def output_device() -> torch.device:
    """Where node outputs (IMAGE tensors) live; ComfyUI keeps them on the CPU."""
    return _mm.intermediate_device() if IN_COMFYUI else torch.device("cpu")


def supports_dtype(dtype: torch.dtype, device: torch.device | None = None) -> bool:
    device = device or torch_device()
    if dtype == torch.float32:
        return True
    if IN_COMFYUI:
        if dtype == torch.float16:
            return _mm.should_use_fp16(device, prioritize_performance=False) or device.type == "cpu"
        return _mm.should_use_bf16(device, prioritize_performance=False) or device.type == "cpu"
    if device.type == "cuda":
        return dtype == torch.float16 or torch.cuda.is_bf16_supported()
    return True  # CPU and MPS run both half types (slowly on the CPU)


def free_memory(bytes_needed: int, device: torch.device) -> None:
    """Ask the host to unload other models until ``bytes_needed`` fit on ``device``."""
    if IN_COMFYUI:
        _mm.free_memory(bytes_needed, device)


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def oom_errors() -> tuple[type[BaseException], ...]:
    return (_mm.OOM_EXCEPTION,) if IN_COMFYUI else (torch.cuda.OutOfMemoryError,)


def soft_empty_cache() -> None:
    if IN_COMFYUI:
        _mm.soft_empty_cache()
    elif torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_interrupt() -> None:
    """Raise the host's interruption exception if the user pressed Cancel; no-op outside ComfyUI."""
    if IN_COMFYUI:
        _mm.throw_exception_if_processing_interrupted()


class Progress:
    """ComfyUI's node progress bar, or tqdm outside the host; checks for interruption on each step."""

    def __init__(self, total: int, desc: str = ""):
        self.total = max(int(total), 1)
        if IN_COMFYUI:
            self._bar = _comfy_utils.ProgressBar(self.total)
        else:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=desc, leave=False, disable=os.environ.get("DEBLUR_NO_PROGRESS") == "1")

    def update(self, n: int = 1) -> None:
        check_interrupt()
        self._bar.update(n)

    def close(self) -> None:
        if not IN_COMFYUI:
            self._bar.close()
