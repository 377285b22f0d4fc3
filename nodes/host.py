"""The one module that touches ComfyUI: the pack's ComfyUI backend.

Inside ComfyUI it registers the ``deblur`` model folder (so ``extra_model_paths.yaml`` entries named
``deblur`` work too), and installs :class:`ComfyHost` so device, precision, memory, progress and
interruption come from the host (``models/common/runtime.py`` holds the host-neutral layer and the
standalone fallbacks used anywhere else: tests, tools). The functions below keep the names the nodes
call and forward to that layer.
"""
from __future__ import annotations

import inspect
import os

import torch

from ..models.common import runtime
from ..models.common.model_paths import resolve_model_name
from ..models.common.runtime import ENV_MODELS, MODEL_FOLDER, Progress, module_bytes  # noqa: F401 (public names)

try:  # ComfyUI's own top-level modules; absent outside the host
    import comfy.model_management as _mm
    import comfy.utils as _comfy_utils
    import folder_paths as _folder_paths
except ImportError:
    _mm = _comfy_utils = _folder_paths = None

try:  # newer hosts (dynamic VRAM, comfy-aimdo): holds the switch ``aimdo_enabled``
    import comfy.memory_management as _memory_management
except ImportError:
    _memory_management = None

IN_COMFYUI = _mm is not None


class _ComfyProgress:
    def __init__(self, total: int):
        self._bar = _comfy_utils.ProgressBar(total)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def close(self) -> None:
        pass


class ComfyHost(runtime.Host):
    """What ComfyUI provides: its device choice, offloading, memory manager, progress bar and Cancel."""

    name = "ComfyUI"

    def torch_device(self):
        return _mm.get_torch_device()

    def offload_device(self):
        return _mm.unet_offload_device()

    def output_device(self):
        return _mm.intermediate_device()

    def supports_dtype(self, dtype, device):
        if dtype == torch.float32:
            return True
        if dtype == torch.float16:
            return _mm.should_use_fp16(device, prioritize_performance=False) or device.type == "cpu"
        return _mm.should_use_bf16(device, prioritize_performance=False) or device.type == "cpu"

    def dynamic_vram(self) -> bool:
        """Whether the host's allocator evicts its models' weights on demand (dynamic VRAM, on by default
        on NVIDIA with torch >= 2.8 in newer hosts), so a memory request need not unload them."""
        return (bool(getattr(_memory_management, "aimdo_enabled", False))
                and "for_dynamic" in inspect.signature(_mm.free_memory).parameters)

    def free_memory(self, bytes_needed, device):
        if self.dynamic_vram():  # unload only models the allocator cannot evict; the user's stay loaded
            _mm.free_memory(bytes_needed, device, for_dynamic=True)
        else:
            _mm.free_memory(bytes_needed, device)

    def available_memory(self, device):
        """ComfyUI's own count on GPUs (its cache included); the CPU's as standalone (resource limits too)."""
        return super().available_memory(device) if device.type == "cpu" else int(_mm.get_free_memory(device))

    def soft_empty_cache(self):
        _mm.soft_empty_cache()

    def is_out_of_memory(self, error):
        return runtime.memory_manager_oom_test(_mm)(error)

    def check_interrupt(self):
        _mm.throw_exception_if_processing_interrupted()

    def model_dirs(self):
        return _folder_paths.get_folder_paths(MODEL_FOLDER)

    def host_model_dirs(self, kind):
        try:
            return _folder_paths.get_folder_paths(kind)
        except KeyError:
            return []

    def progress_bar(self, total, desc):
        return _ComfyProgress(total)


if IN_COMFYUI:
    runtime.use(ComfyHost())


def register_model_folder() -> None:
    if IN_COMFYUI:
        _folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(_folder_paths.models_dir, MODEL_FOLDER), is_default=True)


register_model_folder()

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_images")
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".mp4")  # .mp4: Load Video lists it (video/mp4)
ENV_NO_EXAMPLES = "COMFYUI_DEBLUR_NO_EXAMPLES"


def copy_examples(input_dir: str, examples_dir: str = EXAMPLES_DIR) -> list[str]:
    """Copy the pack's example photos into ``input_dir`` where no entry of that name exists yet.

    LoadImage lists only ComfyUI's input folder, so this is what lets the bundled workflows open
    with their photo already selected. A user's file of the same name is never overwritten, and
    nothing is written through a link (even a dangling one): each copy is created exclusively.
    Returns the names copied.
    """
    if not os.path.isdir(examples_dir):
        return []
    copied = []
    for name in sorted(os.listdir(examples_dir)):
        target = os.path.join(input_dir, name)
        if name.lower().endswith(EXAMPLE_SUFFIXES) and not os.path.lexists(target):
            os.makedirs(input_dir, exist_ok=True)
            if _create_copy(os.path.join(examples_dir, name), target):
                copied.append(name)
    return copied


def _create_copy(source: str, target: str) -> bool:
    """Copy into a file that this call creates (O_EXCL: never an existing file or link's target)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(target, flags, 0o644)
    except FileExistsError:
        return False
    try:
        with os.fdopen(descriptor, "wb") as out, open(source, "rb") as data:
            while chunk := data.read(1 << 20):
                out.write(chunk)
    except BaseException:
        os.unlink(target)
        raise
    return True


def install_examples() -> list[str]:
    """In ComfyUI, copy the example photos into its input folder (opt out: COMFYUI_DEBLUR_NO_EXAMPLES=1)."""
    if not IN_COMFYUI or os.environ.get(ENV_NO_EXAMPLES) == "1":
        return []
    try:
        return copy_examples(_folder_paths.get_input_directory())
    except OSError as error:  # a read-only input folder must not stop the pack from loading
        import logging

        logging.getLogger(__name__).warning("deblur: could not copy the example photos: %s", error)
        return []


install_examples()


def model_dirs() -> list[str]:
    """Folders searched for models, in priority order."""
    return runtime.model_dirs()


def find_in_model_dirs(find) -> list[str]:
    """``find(root)``'s names over every model folder, in priority order, each name once."""
    return runtime.find_in_model_dirs(find)


host_model_dirs = runtime.host_model_dirs  # the host's folders of SD bases (checkpoints, diffusers)


def resolve_model(name: str) -> str:
    """The full path of a model listed by name, confined to :func:`model_dirs` (no absolute paths or '..')."""
    return resolve_model_name(name, model_dirs(), f"put it under models/{MODEL_FOLDER}/ (see the README's weights table)")


torch_device = runtime.torch_device
offload_device = runtime.offload_device
output_device = runtime.output_device  # where node outputs (IMAGE tensors) live; ComfyUI keeps them on the CPU
supports_dtype = runtime.supports_dtype
free_memory = runtime.free_memory
is_out_of_memory = runtime.is_out_of_memory
soft_empty_cache = runtime.soft_empty_cache

PRECISIONS = runtime.PRECISIONS
choose_dtype = runtime.choose_dtype


def check_interrupt() -> None:
    """Raise the host's interruption exception if the user pressed Cancel; no-op outside ComfyUI."""
    runtime.check_interrupt()


def add_get_route(path: str, respond) -> bool:
    """Serve ``GET path`` (and ``/api`` + path) from ComfyUI's web server; ``respond()`` returns
    ``(body, content type)``, the body text (sent as UTF-8) or bytes. Only inside ComfyUI; returns whether
    the route was added. Routes added while the pack loads come before the host's own (ComfyUI adds those
    after every custom node), so an exact path here answers before a pattern of the host's."""
    server = getattr(_import_server(), "PromptServer", None)
    instance = getattr(server, "instance", None)
    if instance is None:
        return False
    from aiohttp import web

    async def handler(_request):
        body, content_type = respond()
        if isinstance(body, bytes):
            return web.Response(body=body, content_type=content_type)
        return web.Response(text=body, content_type=content_type, charset="utf-8")

    instance.routes.get(path)(handler)
    return True


def _import_server():
    if not IN_COMFYUI:
        return None
    try:
        import server  # ComfyUI's web server module (top level in the host)
    except ImportError:
        return None
    return server


def save_preview_images(images: torch.Tensor, prefix: str = "deblur_preview") -> list[dict]:
    """Write ``IMAGE`` tensors ``[B, H, W, C]`` as PNGs into ComfyUI's temp folder, as PreviewImage does,
    and return the ``{"filename", "subfolder", "type"}`` entries a node's ``ui`` output refers to them by.
    Outside ComfyUI there is nowhere to serve them from: returns ``[]``."""
    if not IN_COMFYUI:
        return []
    import secrets

    from PIL import Image

    temp = _folder_paths.get_temp_directory()
    prefix = f"{prefix}_{secrets.token_hex(3)}"
    folder, filename, counter, subfolder, _ = _folder_paths.get_save_image_path(prefix, temp, images.shape[2], images.shape[1])
    saved = []
    for index, image in enumerate(images):
        pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        name = f"{filename}_{counter + index:05}_.png"
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(os.path.join(folder, name), compress_level=1)
        saved.append({"filename": name, "subfolder": subfolder, "type": "temp"})
    return saved
