"""GoPro-style blur from a frame sequence: the average of ``n`` consecutive frames is the blurry
image, the middle frame the sharp one (Nah et al. 2017). FideDiff reads the number of frames as the
blur level, ``t = (n − 1)·20``, so a single sharp frame is level 0; it travels with the pair.

GoPro averaged in linear light (inverse camera response ≈ gamma 2.2, then re-applied), which makes
bright streaks look right; ``gamma=1`` averages the stored values directly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .degrade import from_linear, to_linear

LEVEL_PER_FRAME = 20


def blur_level(frames: int) -> int:
    """FideDiff's timestep for a blur made of ``frames`` frames."""
    if frames < 1:
        raise ValueError(f"need at least one frame, got {frames}")
    return (frames - 1) * LEVEL_PER_FRAME


def frames_for_level(level: int) -> int:
    if level < 0 or level % LEVEL_PER_FRAME:
        raise ValueError(f"blur level must be a non-negative multiple of {LEVEL_PER_FRAME}, got {level}")
    return level // LEVEL_PER_FRAME + 1


@dataclass
class FramePair:
    blurry: torch.Tensor  # [C, H, W]
    sharp: torch.Tensor  # [C, H, W], the middle frame
    frames: int
    level: int  # (frames - 1) * 20
    start: int = 0  # index of the first frame in the sequence


def average_frames(frames: torch.Tensor, gamma: float = 2.2) -> FramePair:
    """``[n, C, H, W]`` frames in 0..1 (n odd) → the blurry average and the middle frame."""
    n = frames.shape[0]
    if frames.ndim != 4 or n % 2 == 0:
        raise ValueError(f"need [n, C, H, W] with an odd number of frames (the middle one is sharp), got {tuple(frames.shape)}")
    blurry = from_linear(to_linear(frames.float(), gamma).mean(0), gamma)
    return FramePair(blurry, frames[n // 2].float(), n, blur_level(n))


def frame_pairs(sequence: torch.Tensor, frames: int, stride: int | None = None, gamma: float = 2.2) -> list[FramePair]:
    """Pairs from a ``[T, C, H, W]`` sequence, windows of ``frames`` starting every ``stride`` frames
    (default: non-overlapping, as GoPro)."""
    stride = stride or frames
    pairs = []
    for start in range(0, sequence.shape[0] - frames + 1, stride):
        pair = average_frames(sequence[start:start + frames], gamma)
        pair.start = start
        pairs.append(pair)
    return pairs
