"""The deblurring methods as one registry, for adapters that offer "pick a method and a model, deblur"
(the WebUI's Extras step and its API route; ComfyUI has a node graph per method instead).

Each :class:`Method` says where its models are found, which files they are, how to load one and how
to run it on one image; :func:`deblur_image` does the rest the same way for all: name confinement,
precision, device, memory, progress and interruption through ``common/runtime.py``. A new method
plugs in with one ``Method(...)`` entry appended to :data:`METHODS`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable

import torch

from .common import memory, runtime
from .common.model_paths import resolve_model_name

log = logging.getLogger(__name__)

PRECISIONS = runtime.PRECISIONS
MAX_SEED = 0xFFFFFFFFFFFFFFFF
MAX_TILE = 8192
MIN_TILE = 64
OOM_FIRST_TILE, OOM_SMALLEST_TILE = 512, 128  # tiles tried after running out of memory


@dataclass(frozen=True)
class Settings:
    """What a user chooses besides method and model. ``tile_size`` 0 = the whole image at once."""
    seed: int
    tile_size: int = 0
    precision: str = "auto"


@dataclass(frozen=True)
class Method:
    name: str
    find_models: Callable[[str], list[str]]  # model names under one model folder
    load: Callable[[str, torch.dtype], torch.nn.Module]  # (path, dtype) → model on the CPU
    # (model, rgb [1, 3, H, W] in 0..1 on the CPU, settings, device, on_step) → rgb [1, 3, H, W];
    # it moves what it needs to ``device`` (run_on_device moves everything back afterwards).
    run: Callable
    steps: Callable[[torch.nn.Module, int, int, Settings], int]  # progress units for one image
    bytes_per_pixel: int  # rough fp32 peak activations, for the host's memory request
    default_seed: int
    weights: list[dict]  # the official releases: name, folder under models/deblur/, files, url
    alternative: str = ""  # other accepted forms (converted .safetensors)
    bundled: Callable[[], dict[str, str]] = dict  # the models shipped with the pack and present: name → path
    auto_dtype: Callable[[torch.device], torch.dtype] = lambda _device: torch.float32
    model_bytes_per_pixel: Callable[[torch.nn.Module], int] | None = None  # a better figure for this model's size

    def activation_bytes(self, model: torch.nn.Module, dtype: torch.dtype) -> int:
        """Rough peak activation bytes per pixel of the region run at once, in ``dtype``."""
        per_pixel = self.model_bytes_per_pixel(model) if self.model_bytes_per_pixel else self.bytes_per_pixel
        return per_pixel * torch.finfo(dtype).bits // 32

    def missing_weights_help(self) -> str:
        folders = runtime.model_dirs() or [f"models/{runtime.MODEL_FOLDER}"]
        if not self.weights:  # nothing released: ``alternative`` says how to make one
            return f"No {self.name} model found in {', '.join(folders)}. {self.alternative}"
        releases = "; ".join(f"{w['name']}: {', '.join(w['files'])} into {w['folder']}/ ({w['url']})" for w in self.weights)
        extra = f", {self.alternative}" if self.alternative else ""
        return f"No {self.name} model found in {', '.join(folders)}. Download {releases}{extra}."


# --- HI-Diff -------------------------------------------------------------------------------------

def _hidiff_load(path, dtype):
    from .hidiff import load_hidiff

    return load_hidiff(path).set_precision(dtype)


def _hidiff_run(model, rgb, settings, device, on_step):
    from .hidiff import deblur

    return deblur(model.to(device), rgb.to(device), settings.seed, settings.tile_size, HIDIFF_OVERLAP, on_step,
                  runtime.check_interrupt)  # also between the restoration's blocks


def _hidiff_steps(model, height, width, settings):
    from .hidiff import steps_per_image

    return steps_per_image(model, height, width, settings.tile_size, HIDIFF_OVERLAP)


def _hidiff_find(root):
    from .hidiff import find_hidiff_models

    return find_hidiff_models(root)


def _hidiff_bundled() -> dict[str, str]:
    from .hidiff import default_model

    return {default_model.DEFAULT_NAME: default_model.DEFAULT_PATH} if default_model.default_available() else {}


def hidiff_bytes_per_pixel(model) -> int:
    """fp32 peak per pixel of net_g: 6 kB measured for the official width 48 (GoPro, on a GPU); the
    activations grow with the width (the bundled model, 16 wide, peaks at ~0.9 kB per pixel on the CPU)."""
    return HIDIFF_BYTES_PER_PIXEL * model.net_g.config.dim // 48


HIDIFF_BYTES_PER_PIXEL = 6000
HIDIFF_OVERLAP = 32
HIDIFF_FILES = ["net_g.pth", "net_le_dm.pth", "net_d.pth"]
HIDIFF = Method(
    name="HI-Diff", find_models=_hidiff_find, load=_hidiff_load, run=_hidiff_run, steps=_hidiff_steps,
    bytes_per_pixel=HIDIFF_BYTES_PER_PIXEL, model_bytes_per_pixel=hidiff_bytes_per_pixel, default_seed=100,
    bundled=_hidiff_bundled,
    alternative="or one .safetensors merged by tools/convert_hidiff.py",
    weights=[
        {"name": "HI-Diff GoPro", "folder": "HI_Diff_GoPro", "files": HIDIFF_FILES,
         "url": "https://drive.google.com/file/d/1cx0vCV5Z5fklnbqonZQad37vt4armEbT/view?usp=drive_link"},
        {"name": "HI-Diff RealBlur-J", "folder": "HI_Diff_RealBlur_J", "files": HIDIFF_FILES,
         "url": "https://drive.google.com/file/d/1zdAOurzjAONRmLuPmSi0nppyqT2ORIRg/view?usp=drive_link"},
        {"name": "HI-Diff RealBlur-R", "folder": "HI_Diff_RealBlur_R", "files": HIDIFF_FILES,
         "url": "https://drive.google.com/file/d/1inQwZ6SJIHYyZoQo702Mv4upjvgg3kFA/view?usp=drive_link"},
    ])


# --- DeblurDiff ----------------------------------------------------------------------------------

def _deblurdiff_options(settings):
    from .deblurdiff import SamplingOptions

    tile = settings.tile_size
    return SamplingOptions(tiled=bool(tile), tile_size=tile or 512, tile_stride=max(8, (tile or 512) // 2 // 8 * 8))


def _deblurdiff_load(path, dtype):
    from .deblurdiff import load_deblurdiff

    return load_deblurdiff(path, dtype)


def _deblurdiff_run(model, rgb, settings, device, on_step):
    from .deblurdiff import deblur

    return deblur(model, rgb, _deblurdiff_options(settings), settings.seed, device, on_step, runtime.offload_device())


def _deblurdiff_steps(model, height, width, settings):
    from .deblurdiff import steps_per_image

    return steps_per_image(_deblurdiff_options(settings))


def _deblurdiff_find(root):
    from .deblurdiff import find_deblurdiff_models

    return find_deblurdiff_models(root)


DEBLURDIFF = Method(
    name="DeblurDiff", find_models=_deblurdiff_find, load=_deblurdiff_load, run=_deblurdiff_run,
    steps=_deblurdiff_steps, bytes_per_pixel=12_000, default_seed=231,
    alternative="or one .safetensors made by tools/convert_deblurdiff.py",
    auto_dtype=runtime.half_on_gpus,
    weights=[
        {"name": "DeblurDiff", "folder": "DeblurDiff", "files": ["model.pth"],
         "url": "https://drive.google.com/drive/folders/1CUtnUKbu_zTyjJ17F95UYyh2SDzCOHeW?usp=drive_link"},
    ])


# --- the Stable Diffusion bases of FideDiff and OSDD ------------------------------------------------
# Their model file (models/deblur/FideDiff/…, models/deblur/OSDD/…) records the file or folder name of the
# SD 2.1 base it was trained on (``base_name``, as tools/train_fidediff.py and tools/train_osdd.py write
# it); the base is the file or folder of that name in the host's checkpoints / diffusers folders (or
# DeblurDiff's model.pth), and the method's loader checks its fingerprint.

def _recorded_bases(method_name: str, path: str) -> list[str]:
    from . import deblurdiff  # noqa: F401 (registers its model.pth as an SD base file)
    from .common.checkpoint import read_metadata
    from .sd21.base_files import KINDS, base_roots, choices_named, resolve_base

    metadata = read_metadata(path)
    name = metadata.get("base_name", "")
    choices = choices_named(name) if name else []
    if not choices:
        folders = [root for kind in KINDS for root in base_roots(kind)] or ["the host's checkpoints folder"]
        wanted = f"its base {name[:200]!r}" if name else "its base (the file does not record the base's file name)"
        raise FileNotFoundError(
            f"{method_name}: {path} runs on the Stable Diffusion 2.1 model it was trained on "
            f"(fingerprint {metadata.get('base_fingerprint', '?')[:64]}), but {wanted} is not in {', '.join(folders)}. "
            "Put that file there under that name (stabilityai/stable-diffusion-2-1-base, v2-1_512-ema-pruned.safetensors, "
            "for weights trained on it).")
    return [resolve_base(choice) for choice in choices]


def _load_on_recorded_base(method_name: str, path: str, load_on: Callable[[str], torch.nn.Module]) -> torch.nn.Module:
    """``load_on(base_path)`` on the first base of the recorded name whose fingerprint fits (the loader
    raises CheckpointError for the others)."""
    from .common.checkpoint import CheckpointError

    refused = []
    for base in _recorded_bases(method_name, path):
        try:
            return load_on(base)
        except CheckpointError as error:
            refused.append(error)
    raise refused[0]


def _no_release_help(method_name: str, folder: str, tool: str, doc: str, model_word: str) -> str:
    """``Method.alternative`` for a method without released weights: how to make them, where they go."""
    return (f"There is no official {method_name} release: train {model_word} with {tool} ({doc}) and put it in "
            f"models/deblur/{folder}/. It runs on the Stable Diffusion 2.1 base it was trained on "
            "(v2-1_512-ema-pruned.safetensors), found by file name in the host's checkpoints folder "
            "(ComfyUI models/checkpoints, WebUI models/Stable-diffusion).")


# --- FideDiff ------------------------------------------------------------------------------------
# The model name is the adapter (models/deblur/FideDiff/…); its base as above.

def _fidediff_load(path, dtype):
    from .fidediff import load_fidediff

    return _load_on_recorded_base("FideDiff", path, lambda base: load_fidediff(base, path, dtype))


def _fidediff_options(model, settings):
    """Settings' tile (image pixels; 0 = whole image) → the pipeline's autoencoder and UNet tiles."""
    from .fidediff.pipeline import DeblurOptions

    tile = settings.tile_size * (2 if model.latent_downsample == 4 else 1)  # d = 4 encodes the image ×2
    return DeblurOptions(latent_tile=max(16, tile // 64 * 8), vae_tile=max(128, tile)) if tile else \
        DeblurOptions(latent_tile=0, vae_tile=0)


def _fidediff_run(model, rgb, settings, device, on_step):
    from .fidediff.pipeline import deblur

    return deblur(model.to(device), rgb.to(device), _fidediff_options(model, settings), on_step)[0]


def _fidediff_steps(model, height, width, settings):
    from .fidediff.pipeline import STAGES

    return STAGES


def _fidediff_find(root):
    from .fidediff import find_adapters

    return find_adapters(root)


FIDEDIFF = Method(
    name="FideDiff", find_models=_fidediff_find, load=_fidediff_load, run=_fidediff_run, steps=_fidediff_steps,
    bytes_per_pixel=16_000,  # the nodes' 4 000 per autoencoder pixel; d = 4 encodes the image ×2
    default_seed=0,  # deterministic: one step, no noise; the seed is not used
    auto_dtype=runtime.half_on_gpus, weights=[],
    alternative=_no_release_help("FideDiff", "FideDiff", "tools/train_fidediff.py", "docs/fidediff.md", "an adapter"))


# --- OSDD ----------------------------------------------------------------------------------------
# The model name is OSDD's file (models/deblur/OSDD/…); its base as above. γ is the learnt gate's, per
# image (the ComfyUI nodes also offer a fixed γ); one deterministic step, so the seed is not used.

def _osdd_load(path, dtype):
    from .osdd import load_osdd
    from .sd21.base import load_base

    return _load_on_recorded_base("OSDD", path, lambda base: load_osdd(path, load_base(base, dtype)))


def _osdd_tiling(model, settings):
    """Settings' tile (image pixels; 0 = whole image) → OSDD's tiling: whole UNet multiples, half overlap."""
    from .osdd import Tiling

    if not settings.tile_size:
        return None
    multiple, f = model.pad_multiple, model.evae.downsampling
    tile = max(multiple, settings.tile_size // multiple * multiple)
    return Tiling(tile, max(f, tile // 2 // f * f))


def _osdd_run(model, rgb, settings, device, on_step):
    from .osdd import deblur

    out, gammas = deblur(model, rgb, "auto", device, _osdd_tiling(model, settings), on_step, runtime.check_interrupt,
                         runtime.offload_device())
    log.info("OSDD: γ %.3f (the gate's)", gammas[0])
    return out


def _osdd_steps(model, height, width, settings):
    return 1  # osdd.deblur reports once per image


def _osdd_find(root):
    from .osdd import find_osdd_models

    return find_osdd_models(root)


OSDD = Method(
    name="OSDD", find_models=_osdd_find, load=_osdd_load, run=_osdd_run, steps=_osdd_steps,
    bytes_per_pixel=3_000,  # the OSDD nodes' figure (skips kept, one UNet pass)
    default_seed=0,  # deterministic: one step, no noise; the seed is not used
    auto_dtype=runtime.half_on_gpus, weights=[],
    alternative=_no_release_help("OSDD", "OSDD", "tools/train_osdd.py", "docs/osdd.md", "one"))

METHODS: list[Method] = [HIDIFF, DEBLURDIFF, FIDEDIFF, OSDD]


# --- the one flow every method shares --------------------------------------------------------------

def get_method(name: str) -> Method:
    for method in METHODS:
        if method.name.lower() == str(name).lower():
            return method
    raise ValueError(f"unknown method {name!r}; choose one of {', '.join(m.name for m in METHODS)}")


def list_models(method: Method) -> list[str]:
    """The bundled models first (the default), then those found in the model folders."""
    names = list(method.bundled())
    return names + [n for n in runtime.find_in_model_dirs(method.find_models) if n not in names]


def default_model(method: Method) -> str | None:
    names = list_models(method)
    return names[0] if names else None


def model_path(method: Method, name: str) -> str:
    """The file or folder of a listed model. Only names the listing offers are accepted, and they
    resolve confined to the model folders (``common/model_paths.py``)."""
    bundled = method.bundled()
    if name in bundled:
        return bundled[name]
    if name not in list_models(method):
        if not list_models(method):
            raise FileNotFoundError(method.missing_weights_help())
        raise FileNotFoundError(f"{method.name}: no model named {name!r}; available: {', '.join(list_models(method))}")
    return resolve_model_name(name, runtime.model_dirs())


def check_settings(settings: Settings) -> None:
    if isinstance(settings.seed, bool) or not isinstance(settings.seed, int) or not 0 <= settings.seed <= MAX_SEED:
        raise ValueError(f"seed must be a whole number from 0 to {MAX_SEED}, got {settings.seed!r}")
    tile = settings.tile_size
    if isinstance(tile, bool) or not isinstance(tile, int) or not (tile == 0 or MIN_TILE <= tile <= MAX_TILE) or tile % 8:
        raise ValueError(f"tile_size must be 0 (whole image) or a multiple of 8 from {MIN_TILE} to {MAX_TILE}, got {tile!r}")
    if not isinstance(settings.precision, str) or settings.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {settings.precision!r}")


def resolve_dtype(method: Method, precision: str, device: torch.device) -> torch.dtype:
    return runtime.choose_dtype(precision, method.name, device, method.auto_dtype)


def smaller_tile(tile: int) -> int | None:
    """The next tile size to try after running out of memory with ``tile`` (0 = whole image), or None."""
    smaller = OOM_FIRST_TILE if not tile or tile > OOM_FIRST_TILE else tile // 2 // 8 * 8
    return smaller if smaller >= OOM_SMALLEST_TILE else None


def deblur_image(method: Method, model_name: str, rgb: torch.Tensor, settings: Settings) -> tuple[torch.Tensor, dict]:
    """``rgb`` ``[1, 3, H, W]`` in 0..1 → (deblurred ``[1, 3, H, W]`` clamped to 0..1 on the CPU, what was
    used: method, model, seed, tile size, precision). Before running, the peak is estimated and, where
    it exceeds what the device has free, the image goes in tiles (``common/memory.py``; the info gives
    the size used), or :class:`memory.MemoryLimitError` says why not. Out of memory anyway, it retries
    in ever smaller tiles (512, 256, 128 px), as the ComfyUI nodes do. The model is loaded for this call
    and released after it, so nothing stays in memory between runs."""
    check_settings(settings)
    device = runtime.torch_device()
    dtype = resolve_dtype(method, settings.precision, device)
    height, width = rgb.shape[-2:]
    memory.plan_tile(height, width, 0, lambda _h, _w: 0, device, method.name, tiles=())  # the image alone
    model = method.load(model_path(method, model_name), dtype).eval()
    try:
        weights, per_pixel = runtime.module_bytes(model), method.activation_bytes(model, dtype)

        def bytes_for(h: int, w: int) -> int:
            return weights + per_pixel * h * w

        settings = replace(settings, tile_size=memory.plan_tile(height, width, settings.tile_size, bytes_for, device, method.name))
        while True:
            tile = settings.tile_size
            try:
                with torch.inference_mode():
                    out = runtime.run_on_device(
                        model, bytes_for(min(height, tile or height), min(width, tile or width)),
                        method.steps(model, height, width, settings),
                        method.name, lambda net, dev, on_step: method.run(net, rgb, settings, dev, on_step), move=False)
                break
            except Exception as error:
                if not runtime.is_out_of_memory(error):
                    raise
                smaller = smaller_tile(tile)
                if smaller is None:
                    raise
                log.warning("%s: out of memory; retrying in %d px tiles", method.name, smaller)
                settings = replace(settings, tile_size=smaller)
    finally:
        del model
        runtime.soft_empty_cache()
    info = {"method": method.name, "model": model_name, "seed": settings.seed, "tile_size": settings.tile_size,
            "precision": {v: k for k, v in PRECISIONS.items() if v is not None}[dtype]}
    return out.float().clamp(0, 1).cpu(), info
