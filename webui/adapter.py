"""What the Extras step and the API route share, without the WebUI: checking what a user or a request
asks for, converting images, running a method and describing the run (PNG info, JSON).

Nothing here imports the WebUI, gradio or FastAPI, so the argument handling is tested anywhere.
"""
from __future__ import annotations

import base64
import binascii
import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..models import methods
from ..models.common import image_io, memory, runtime
from ..models.common.checkpoint import CheckpointError

MAX_REQUEST_PIXELS = 64 * 1024 * 1024  # an API image larger than this is refused before decoding it
MAX_BASE64_CHARS = 200 * 1024 * 1024
INFO_PREFIX = "Deblur"


class RequestError(ValueError):
    """A request the route refuses with ``status`` (4xx) and this message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DeblurRequest:
    method: methods.Method
    model: str
    settings: methods.Settings


def method_names() -> list[str]:
    return [m.name for m in methods.METHODS]


def _whole_number(value, name: str) -> int:
    """A whole number from JSON or a gradio Number (which sends floats such as 100.0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise RequestError(f"{name} must be a whole number, got {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise RequestError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def parse_request(method="HI-Diff", model=None, seed=None, tile_size=0, precision="auto") -> DeblurRequest:
    """Check a user's choices; ``model`` None or "" means the method's default (the bundled one first),
    ``seed`` None the method's default seed."""
    try:
        chosen = methods.get_method(method)
    except ValueError as error:
        raise RequestError(str(error)) from None
    if model in (None, ""):
        model = methods.default_model(chosen)
        if model is None:
            raise RequestError(chosen.missing_weights_help(), 404)
    elif not isinstance(model, str):
        raise RequestError(f"model must be a name from GET /deblur/v1/models, got {model!r}")
    elif model not in methods.list_models(chosen):
        available = methods.list_models(chosen)
        raise RequestError(f"{chosen.name}: no model named {model!r}; "
                           + (f"available: {', '.join(available)}" if available else chosen.missing_weights_help()), 404)
    settings = methods.Settings(seed=chosen.default_seed if seed is None else _whole_number(seed, "seed"),
                                tile_size=_whole_number(tile_size, "tile_size"), precision=precision)
    try:
        methods.check_settings(settings)
    except ValueError as error:
        raise RequestError(str(error)) from None
    return DeblurRequest(chosen, model, settings)


def decode_image(data) -> tuple[torch.Tensor, str, np.ndarray | None]:
    """A base64 PNG/JPEG/WebP (optionally a ``data:`` URL; line breaks and spaces ignored) → (RGB
    ``[1, 3, H, W]`` in 0..1, Pillow mode, alpha or None), decoded as the command line decodes files
    (``image_io.decode_image``: 16-bit and grey scaled, EXIF orientation applied), size-checked first."""
    if not isinstance(data, str) or not data:
        raise RequestError("image must be a base64-encoded PNG, JPEG or WebP string")
    if len(data) > MAX_BASE64_CHARS:
        raise RequestError(f"image: {len(data)} base64 characters is more than the {MAX_BASE64_CHARS} accepted", 413)
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        raw = base64.b64decode(data.translate(_WHITESPACE), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("image is not valid base64") from None
    try:
        rgb, mode, alpha = image_io.decode_image(io.BytesIO(raw), "image", image_io.WEB_FORMATS, MAX_REQUEST_PIXELS)
    except image_io.ImageTooLarge as error:
        raise RequestError(f"{error}; send a smaller image", 413) from None
    except image_io.ImageReadError as error:
        raise RequestError(str(error)) from None
    return rgb[None], mode, alpha


_WHITESPACE = str.maketrans("", "", " \t\r\n")  # line-wrapped base64 (``base64`` without ``-w0``, MIME)


def encode_png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def to_tensor(image: Image.Image) -> tuple[torch.Tensor, str, np.ndarray | None]:
    """PIL → (RGB ``[1, 3, H, W]`` in 0..1, its mode, the alpha band or None), as files are read."""
    rgb, mode, alpha = image_io.picture_to_tensor(image)
    return rgb[None], mode, alpha


def to_pil(rgb: torch.Tensor, mode: str, alpha: np.ndarray | None) -> Image.Image:
    """The result in the input's form, as the command line writes it: 16-bit grey stays 16-bit, other
    images are rounded to 8 bits (grey stays grey); alpha passes through."""
    pixels = rgb[0].float().clamp(0, 1).permute(1, 2, 0).numpy()
    if mode in image_io.SIXTEEN_BIT_MODES:
        return Image.fromarray((pixels.mean(-1) * 65535).round().astype(np.uint16))
    out = Image.fromarray((pixels * 255).round().astype(np.uint8))
    if mode in GREY_MODES:
        out = out.convert("L")
    if alpha is not None:
        out.putalpha(Image.fromarray(alpha))
    return out


GREY_MODES = ("L", "LA", "1", "F")


def deblur_tensor(rgb: torch.Tensor, mode: str, alpha, request: DeblurRequest) -> tuple[Image.Image, dict]:
    try:
        restored, info = methods.deblur_image(request.method, request.model, rgb, request.settings)
    except memory.MemoryLimitError as error:
        raise RequestError(f"{error} (at most {MAX_REQUEST_PIXELS} pixels are accepted; tile_size 0 or a larger one "
                           f"is lowered automatically down to {min(memory.TILES)} px tiles)", 413) from None
    return to_pil(restored, mode, alpha), info


def deblur_pil(image: Image.Image, request: DeblurRequest) -> tuple[Image.Image, dict]:
    """The Extras step: the WebUI's picture → the deblurred picture in the same form, and the run's info."""
    return deblur_tensor(*to_tensor(image), request)


def png_info(info: dict) -> dict:
    """The run as PNG-info entries ("Deblur method: HI-Diff", ...), so a saved image tells how it was made."""
    return {f"{INFO_PREFIX} {key.replace('_', ' ')}": value for key, value in info.items()}


def models_listing() -> dict:
    """GET /deblur/v1/models: per method, what it can load (default first) and where weights go."""
    return {"model_folders": runtime.model_dirs(), "methods": [
        {"name": m.name, "models": methods.list_models(m), "default_model": methods.default_model(m),
         "default_seed": m.default_seed, "weights": m.weights,
         "missing_weights": None if methods.list_models(m) else m.missing_weights_help()}
        for m in methods.METHODS]}


REQUEST_KEYS = {"image", "method", "model", "seed", "tile_size", "precision"}


def handle_deblur(payload) -> tuple[int, dict]:
    """POST /deblur/v1/deblur: (HTTP status, JSON body). Bad input → 4xx with ``{"error": message}``."""
    try:
        if not isinstance(payload, dict):
            raise RequestError("the body must be a JSON object")
        unknown = sorted(set(payload) - REQUEST_KEYS)
        if unknown:
            raise RequestError(f"unknown field(s) {', '.join(unknown)}; accepted: {', '.join(sorted(REQUEST_KEYS))}")
        if "image" not in payload:
            raise RequestError("image is required (base64 PNG, JPEG or WebP)")
        request = parse_request(**{k: v for k, v in payload.items() if k != "image"})
        result, info = deblur_tensor(*decode_image(payload["image"]), request)
    except RequestError as error:
        return error.status, {"error": str(error)}
    except (CheckpointError, FileNotFoundError) as error:  # the chosen model's files are broken or gone
        return 422, {"error": str(error)}
    except runtime.Interrupted as error:
        return 409, {"error": f"deblurring was {error}"}
    return 200, {"image": encode_png(result), "info": info}
