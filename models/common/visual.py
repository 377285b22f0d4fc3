"""Pictures for people: labelled side-by-side and split comparisons, error heat-maps, contact sheets.
Images are ``[C, H, W]`` or ``[B, C, H, W]`` float tensors in 0..1 (C = 3); text is drawn with Pillow."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .image_io import save_png  # noqa: F401  (re-exported: pictures are saved as PNG)

# A perceptually ordered dark-to-bright map (black → purple → orange → yellow), a short "inferno".
_HEAT_STOPS = torch.tensor([
    [0.0, 0.0, 0.02], [0.26, 0.04, 0.41], [0.58, 0.15, 0.40], [0.87, 0.32, 0.23], [0.99, 0.64, 0.04], [0.99, 1.0, 0.64]])


def colormap(values: torch.Tensor) -> torch.Tensor:
    """``[..., H, W]`` in 0..1 → ``[..., 3, H, W]`` heat colours."""
    v = values.clamp(0, 1) * (len(_HEAT_STOPS) - 1)
    low = v.floor().long().clamp(max=len(_HEAT_STOPS) - 2)
    frac = (v - low)[..., None]
    colours = _HEAT_STOPS[low] * (1 - frac) + _HEAT_STOPS[low + 1] * frac
    return colours.movedim(-1, -3)


def error_heatmap(restored: torch.Tensor, reference: torch.Tensor, full_scale: float = 0.25) -> torch.Tensor:
    """``[B, 3, H, W]`` heat-map of the per-pixel error (mean absolute over channels); an error of
    ``full_scale`` or more is brightest."""
    error = (restored.float() - reference.float()).abs().mean(1) / full_scale
    return colormap(error)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has a single bitmap font
        return ImageFont.load_default()


def label(image: torch.Tensor, text: str, corner: str = "top-left", in_place: bool = False) -> torch.Tensor:
    """Write ``text`` on a dark band in a corner of ``[3, H, W]`` (into ``image`` itself with
    ``in_place``). Only the band goes through Pillow and 8 bits; the rest keeps its exact values."""
    if not text:
        return image
    h, w = image.shape[-2:]
    font = _font(max(10, min(h, w) // 18))
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
    pad = max(2, (bottom - top) // 4)
    tw, th = right - left + 2 * pad, bottom - top + 2 * pad
    x = 0 if corner.endswith("left") else max(w - tw, 0)
    y = 0 if corner.startswith("top") else max(h - th, 0)
    out = image if in_place else image.clone()
    band = out[:, y:y + th + 1, x:x + tw + 1]
    pil = Image.fromarray((band.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(pil, "RGBA")
    draw.rectangle([0, 0, tw, th], fill=(0, 0, 0, 160))
    draw.text((pad - left, pad - top), text, font=font, fill=(255, 255, 255, 255))
    band.copy_(torch.from_numpy(np.asarray(pil).copy()).permute(2, 0, 1).float().div(255))
    return out


def fit(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize ``[3, h, w]`` to ``height × width`` (bilinear, antialiased when shrinking)."""
    if image.shape[-2:] == (height, width):
        return image
    x = image[None].float()
    # Shrink first, then enlarge: in one step a 20000x1 image fitted to 1x20000 takes a minute
    # (every output pixel weighs a whole input column); in two, the intermediate is never larger
    # than the input or the output.
    for size in ((min(height, x.shape[-2]), min(width, x.shape[-1])), (height, width)):
        if x.shape[-2:] != size:
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x[0].clamp(0, 1)


# A composite of images of very different shapes (512x8 beside 1x512 at one height is 262156 px
# wide) is scaled down as a whole to stay within these.
MAX_COMPOSITE_SIDE = 16384
MAX_COMPOSITE_PIXELS = 1 << 26  # 64 MP: 768 MB as float32 RGB


def row_size(shapes: list[tuple[int, int]], gap: int = 4) -> tuple[int, list[int]]:
    """The common height and the widths of a row of ``(h, w)`` images: the first one's height,
    less where the row would pass :data:`MAX_COMPOSITE_SIDE` on a side or :data:`MAX_COMPOSITE_PIXELS`
    (and where one pixel of height is still too wide, narrower panels)."""
    h = shapes[0][0]
    width = sum(w * h / ih for ih, w in shapes) + gap * (len(shapes) - 1)
    scale = min(1.0, MAX_COMPOSITE_SIDE / h, MAX_COMPOSITE_SIDE / width, math.sqrt(MAX_COMPOSITE_PIXELS / (h * width)))
    h = h if scale >= 1 else max(1, math.floor(h * scale))
    widths = [max(1, round(w * h / ih)) for ih, w in shapes]
    room = MAX_COMPOSITE_SIDE - gap * (len(shapes) - 1)
    if sum(widths) > room:
        widths = [max(1, w * room // sum(widths)) for w in widths]
    return h, widths


def side_by_side(images: list[torch.Tensor], labels: list[str] | None = None, gap: int = 4) -> torch.Tensor:
    """``[3, H, W]`` images in a row (resized to the first one's height, or to :func:`row_size`
    where that would be too large), labelled, on a dark ground."""
    h, widths = row_size([tuple(image.shape[-2:]) for image in images], gap)
    row = []
    for i, (image, w) in enumerate(zip(images, widths)):
        tile = label(fit(image, h, w), labels[i] if labels else "")
        row.append(tile)
        if i + 1 < len(images) and gap:
            row.append(torch.full((3, h, gap), 0.1))
    return torch.cat(row, -1)


def split_view(left: torch.Tensor, right: torch.Tensor, position: float = 0.5, labels: tuple[str, str] = ("", ""),
               line: int = 2) -> torch.Tensor:
    """One frame: ``left`` up to ``position`` (0..1 of the width), ``right`` after it, a divider line."""
    h, w = left.shape[-2:]
    right = fit(right, h, w)
    cut = int(round(min(max(position, 0.0), 1.0) * w))
    out = torch.cat([left[..., :cut], right[..., cut:]], -1).clone()
    if line and 0 < cut < w:
        out[:, :, max(cut - line // 2, 0):cut + (line + 1) // 2] = 1.0
    out = label(out, labels[0], "top-left")
    return label(out, labels[1], "top-right")


def contact_sheet(rows: list[list[torch.Tensor]], column_labels: list[str] | None = None,
                  row_labels: list[str] | None = None, height: int = 192, gap: int = 4) -> torch.Tensor:
    """A grid: one row per sample, its images side by side at ``height`` px, labels on the first row."""
    lines = []
    for r, images in enumerate(rows):
        labels = list(column_labels) if column_labels and r == 0 else [""] * len(images)
        if row_labels:
            labels[-1] = f"{labels[-1]}  {row_labels[r]}".strip() if r == 0 else row_labels[r]
        scaled = [fit(im, height, max(1, round(im.shape[-1] * height / im.shape[-2]))) for im in images]
        lines.append(side_by_side(scaled, labels, gap))
    width = max(line.shape[-1] for line in lines)
    padded = [torch.nn.functional.pad(line, (0, width - line.shape[-1]), value=0.1) for line in lines]
    spacer = torch.full((3, gap, width), 0.1)
    out = []
    for i, line in enumerate(padded):
        out.append(line)
        if i + 1 < len(padded):
            out.append(spacer)
    return torch.cat(out, -2)
