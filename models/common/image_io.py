"""Reading and writing image files as ``[3, H, W]`` float tensors in 0..1 (Pillow), for the command
line tools, datasets and the WebUI's API (one decoder: :func:`decode_image`). A file or payload that
cannot be read raises :class:`ImageReadError` naming it."""
from __future__ import annotations

import os
import re
import stat

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
FILE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")  # the suffixes' formats: files are decoded as these only
WEB_FORMATS = ("PNG", "JPEG", "WEBP")  # what the WebUI's API accepts
FORMAT_NAMES = {"WEBP": "WebP"}
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
EXIF_ORIENTATION = 0x0112


class ImageReadError(ValueError):
    def __init__(self, path: str, problem: str):
        self.path = os.fspath(path)
        super().__init__(f"{self.path}: {problem}")


class ImageTooLarge(ImageReadError):
    """More pixels than the reader accepts (``limit``); width and height are 0 when Pillow refused it
    as a decompression bomb before telling its size."""

    def __init__(self, path: str, width: int, height: int, limit: int, pixels: int = 0):
        self.width, self.height, self.limit = width, height, limit
        size = f"{width}x{height} ({width * height} pixels)" if width else f"{pixels or 'its size in'} pixels"
        super().__init__(path, f"{size} is more than the {limit} pixels accepted ({limit / 2 ** 20:.0f} megapixels)")


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


def looks_like_image(path: str, formats=FILE_FORMATS) -> bool:
    """Whether Pillow recognises the file's header as one of ``formats`` (nothing is decoded)."""
    if not is_regular_file(path):
        return False
    try:
        with Image.open(path, formats=list(formats)):
            return True
    except Exception:  # noqa: BLE001 (whatever Pillow raises on a damaged header: not an image we read)
        return False


def read_image(path: str) -> torch.Tensor:
    """``[3, H, W]`` float32 in 0..1; grey is repeated to RGB, alpha dropped, 16-bit scaled."""
    return read_image_and_alpha(path)[0]


def read_image_and_alpha(path: str) -> tuple[torch.Tensor, str, np.ndarray | None]:
    """As :func:`read_image`, plus the file's Pillow mode and its alpha channel (or None), for
    writers that give a result back in the input's form."""
    if os.path.lexists(path) and not is_regular_file(path):
        raise ImageReadError(path, "not a regular file")
    if not os.path.lexists(path):
        raise ImageReadError(path, "file not found")
    return decode_image(path, path)


def decode_image(source, name: str, formats=FILE_FORMATS, max_pixels: int | None = None
                 ) -> tuple[torch.Tensor, str, np.ndarray | None]:
    """A file path or binary stream → (``[3, H, W]`` float32 in 0..1, Pillow mode, alpha or None), the
    one decoder of the command line and the WebUI's API. Only ``formats`` are decoded (never
    PostScript, which would start Ghostscript); the size is checked against ``max_pixels`` (and
    Pillow's bomb limit) before any pixel is decoded; EXIF orientation is applied. Anything that goes
    wrong is an :class:`ImageReadError` naming ``name`` (:class:`ImageTooLarge` for the size)."""
    names = [FORMAT_NAMES.get(f, f) for f in formats]
    wanted = ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)
    try:
        with Image.open(source, formats=list(formats)) as image:
            if max_pixels is not None and image.width * image.height > max_pixels:
                raise ImageTooLarge(name, image.width, image.height, max_pixels)
            image.load()
            return picture_to_tensor(upright(image))
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(name, "file not found") from None
    except Image.DecompressionBombError as error:  # Pillow's own limit, before it tells the size
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        raise ImageTooLarge(name, 0, 0, max_pixels or 2 * (Image.MAX_IMAGE_PIXELS or 0),
                            int(pixels.group(1)) if pixels else 0) from None
    except UnidentifiedImageError:
        raise ImageReadError(name, f"could not be decoded: not a {wanted} image") from None
    except Exception as error:  # noqa: BLE001 (Pillow raises many types on damaged data; none may escape)
        raise ImageReadError(name, f"not a readable image: could not be decoded as {wanted} ({_describe(error)})") from None


def upright(image: Image.Image) -> Image.Image:
    """The picture as it is meant to be seen: EXIF orientation applied (portrait photos stand up)."""
    try:
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 (a damaged EXIF block: show the pixels as stored)
        return image
    return ImageOps.exif_transpose(image) if orientation in range(2, 9) else image


def picture_to_tensor(image: Image.Image) -> tuple[torch.Tensor, str, np.ndarray | None]:
    """A decoded Pillow image → (``[3, H, W]`` float32 in 0..1, its mode, alpha or None): 16-bit and
    32-bit grey scaled from 0..65535, grey repeated to RGB, a palette's transparency kept as alpha."""
    mode = image.mode
    if mode in ("P", "PA") and (mode == "PA" or "transparency" in image.info):
        image = image.convert("RGBA")
    alpha = np.asarray(image.getchannel("A")) if "A" in image.getbands() else None
    if mode in SIXTEEN_BIT_MODES or mode == "F":
        grey = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
        grey = grey.div_(65535.0) if mode != "F" else grey
        return grey.clamp_(0, 1)[None].expand(3, -1, -1).contiguous(), mode, alpha
    pixels = torch.from_numpy(np.asarray(image.convert("RGB")).copy())  # 8 bits: one float copy, no clamping needed
    return pixels.permute(2, 0, 1).contiguous().float().div_(255.0), mode, alpha


def _describe(error: BaseException) -> str:
    """An exception's text without object addresses (``<... at 0x7f...>``) or line breaks."""
    text = re.sub(r"<[^<>]* at 0x[0-9a-fA-F]+>", "the data", str(error))
    return " ".join(re.sub(r"0x[0-9a-fA-F]{6,}", "", text).split())[:300] or type(error).__name__


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8)


def save_png(image: torch.Tensor, path: str) -> None:
    """Write ``[3, H, W]`` (or ``[1, H, W]``) in 0..1 as an 8-bit PNG, creating the folder."""
    array = to_uint8(image).permute(1, 2, 0).cpu().numpy()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path)
