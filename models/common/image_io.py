"""Reading and writing image files as ``[3, H, W]`` float tensors in 0..1 (Pillow), for the command
line tools and datasets. A file that cannot be read raises :class:`ImageReadError` naming it."""
from __future__ import annotations

import os
import stat

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    def __init__(self, path: str, problem: str):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {problem}")


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES) and not os.path.basename(name).startswith(".")


def list_images(folder: str, recursive: bool = False) -> list[str]:
    """Regular image files in ``folder`` by name (sorted, paths joined to it); FIFOs, devices and
    folders named like images are left out, since opening them could block or fail."""
    if recursive:
        found = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names if is_image_name(name)]
    else:
        found = [os.path.join(folder, name) for name in os.listdir(folder) if is_image_name(name)]
    return sorted(path for path in found if is_regular_file(path))


def is_regular_file(path: str) -> bool:
    """A regular file (links followed): reading anything else (a FIFO, a device) could block for ever."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def looks_like_image(path: str) -> bool:
    """Whether Pillow recognises the file's header as an image (nothing is decoded)."""
    if not is_regular_file(path):
        return False
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return False


def read_image(path: str) -> torch.Tensor:
    """``[3, H, W]`` float32 in 0..1; grey is repeated to RGB, alpha dropped, 16-bit scaled."""
    return read_image_and_alpha(path)[0]


def read_image_and_alpha(path: str) -> tuple[torch.Tensor, str, np.ndarray | None]:
    """As :func:`read_image`, plus the file's Pillow mode and its alpha channel (or None), for
    writers that give a result back in the input's form."""
    if os.path.lexists(path) and not is_regular_file(path):
        raise ImageReadError(path, "not a regular file")
    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            alpha = np.asarray(image.getchannel("A")) if "A" in image.getbands() else None
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float32) / 65535.0
                array = np.repeat(array[..., None], 3, -1)
            else:
                array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(path, f"not a readable image ({' '.join(str(error).split()) or type(error).__name__})") from None
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).clamp(0, 1), mode, alpha


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def save_png(image: torch.Tensor, path: str) -> None:
    """Write ``[3, H, W]`` (or ``[1, H, W]``) in 0..1 as an 8-bit PNG, creating the folder."""
    array = to_uint8(image).permute(1, 2, 0).cpu().numpy()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
