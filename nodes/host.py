"""The one module that touches ComfyUI.

Inside ComfyUI it registers the ``deblur`` model folder (so ``extra_model_paths.yaml`` entries named
``deblur`` work too), and takes device, precision, memory, progress and interruption from the host.
Imported anywhere else (tests, tools) it falls back to: the best torch device, the model folders in
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

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_images")
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
ENV_NO_EXAMPLES = "COMFYUI_DEBLUR_NO_EXAMPLES"


def copy_examples(input_dir: str, examples_dir: str = EXAMPLES_DIR) -> list[str]:
    """Copy the pack's example photos into ``input_dir`` where no file of that name exists yet.

    LoadImage lists only ComfyUI's input folder, so this is what lets the bundled workflows open
    with their photo already selected. A user's file of the same name is never overwritten.
    Returns the names copied.
    """
    import shutil

    if not os.path.isdir(examples_dir):
        return []
    copied = []
    for name in sorted(os.listdir(examples_dir)):
        target = os.path.join(input_dir, name)
        if name.lower().endswith(EXAMPLE_SUFFIXES) and not os.path.exists(target):
            os.makedirs(input_dir, exist_ok=True)
            shutil.copyfile(os.path.join(examples_dir, name), target)
            copied.append(name)
    return copied


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
    if IN_COMFYUI:
        return _folder_paths.get_folder_paths(MODEL_FOLDER)
    return [p for p in os.environ.get(ENV_MODELS, "").split(os.pathsep) if p]


def find_in_model_dirs(find) -> list[str]:
    """``find(root)``'s names over every model folder, in priority order, each name once."""
    names = []
    for root in model_dirs():
        names += [n for n in find(root) if n not in names]
    return names


def host_model_dirs(kind: str) -> list[str]:
    """The host's folders of another model kind (``checkpoints``, ``diffusers``), for bases the user
    already has; outside ComfyUI the environment variable ``COMFYUI_DEBLUR_<KIND>`` (``os.pathsep``-separated),
    else the ``<kind>`` folders beside the deblur model folders (ComfyUI's ``models/`` layout)."""
    if IN_COMFYUI:
        try:
            return _folder_paths.get_folder_paths(kind)
        except KeyError:
            return []
    variable = os.environ.get(f"COMFYUI_DEBLUR_{kind.upper()}")
    if variable is not None:
        return [p for p in variable.split(os.pathsep) if p]
    return [os.path.join(os.path.dirname(os.path.normpath(d)), kind) for d in model_dirs()]


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


PRECISIONS = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def choose_dtype(precision: str, method: str) -> torch.dtype:
    """A loader's precision choice: ``auto`` = fp16 on CUDA and Apple GPUs, fp32 on the CPU; a half type
    the device cannot run falls back to fp32 with a warning."""
    device = torch_device()
    dtype = PRECISIONS[precision] or (torch.float16 if device.type in ("cuda", "mps") else torch.float32)
    if not supports_dtype(dtype, device):
        import logging

        logging.getLogger(__name__).warning("%s: %s is not supported on %s; using fp32", method, precision, device)
        dtype = torch.float32
    return dtype


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


def add_get_route(path: str, respond) -> bool:
    """Serve ``GET path`` (and ``/api`` + path) from ComfyUI's web server; ``respond()`` returns
    ``(body text, content type)``. Only inside ComfyUI; returns whether the route was added."""
    server = getattr(_import_server(), "PromptServer", None)
    instance = getattr(server, "instance", None)
    if instance is None:
        return False
    from aiohttp import web

    async def handler(_request):
        body, content_type = respond()
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
