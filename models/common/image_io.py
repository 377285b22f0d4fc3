"""Reading and writing image files as ``[3, H, W]`` float tensors in 0..1 (Pillow), for the command
line tools and datasets. A file that cannot be read raises :class:`ImageReadError` naming it."""
from __future__ import annotations

import os

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
    """Image files in ``folder`` (sorted, paths joined to it)."""
    if recursive:
        found = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names if is_image_name(name)]
    else:
        found = [os.path.join(folder, name) for name in os.listdir(folder) if is_image_name(name)]
    return sorted(found)


def read_image(path: str) -> torch.Tensor:
    """``[3, H, W]`` float32 in 0..1; grey is repeated to RGB, alpha dropped, 16-bit scaled."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float32) / 65535.0
                array = np.repeat(array[..., None], 3, -1)
            else:
                array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise ImageReadError(path, f"not a readable image ({' '.join(str(error).split()) or type(error).__name__})") from None
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).clamp(0, 1)


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def save_png(image: torch.Tensor, path: str) -> None:
    """Write ``[3, H, W]`` (or ``[1, H, W]``) in 0..1 as an 8-bit PNG, creating the folder."""
    array = to_uint8(image).permute(1, 2, 0).cpu().numpy()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
