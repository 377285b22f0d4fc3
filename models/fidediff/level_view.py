"""A picture of where an image is blurred and how much: T's blur-level map in heat colours over a dimmed
grey copy of the photo, with a colour bar from level 0 (sharp) to 400 (a 21-frame average)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..blur.frames import LEVEL_PER_FRAME
from ..common.visual import colormap, label
from .estimator import LEVEL_MAX


def level_picture(image: torch.Tensor, level_map: torch.Tensor, level: float, photo_share: float = 0.35) -> torch.Tensor:
    """``image [3, H, W]``, ``level_map [1, h, w]`` → ``[3, H + bar, W]``."""
    h, w = image.shape[-2:]
    levels = F.interpolate(level_map[None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    grey = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2]).clamp(0, 1)
    picture = (1 - photo_share) * colormap(levels / LEVEL_MAX) + photo_share * grey
    frames = level / LEVEL_PER_FRAME + 1
    picture = label(picture, f"blur level {level:.0f} / {LEVEL_MAX:.0f}  (like {frames:.1f} frames averaged)", "top-left")
    bar_height = max(12, h // 16)
    ramp = torch.linspace(0, 1, w).expand(bar_height, w)
    bar = label(colormap(ramp), f"0 sharp {'.' * 3} {LEVEL_MAX:.0f} strong blur", "top-left")
    return torch.cat([picture, bar], -2).clamp(0, 1)
