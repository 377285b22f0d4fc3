"""Make example_images/deblur_example_video.mp4: a short clip for the video_deblur workflow, made
from the bundled sharp cat with nothing fetched.

    python tools/make_example_video.py    # needs PyAV (`av`, which ComfyUI ships)

A window slowly pans across the photo; each frame gets its own seeded camera-shake kernel from the
pack's Synthetic Motion Blur node (a hand-held camera), and a quiet 440 Hz tone is muxed in so
the workflow's audio path has something to carry. Same settings, same frames.
"""
from __future__ import annotations

import argparse
import math
import os

import numpy as np
import torch
from PIL import Image

from _pack import ROOT, pack_module

SOURCE = os.path.join(ROOT, "example_images", "deblur_example_cat_sharp.png")
TARGET = os.path.join(ROOT, "example_images", "deblur_example_video.mp4")
FPS, SECONDS, SIZE = 24, 2, (240, 180)  # width, height: small enough to commit and to deblur on a CPU
BLUR = {"seed": 7, "intensity": 0.4, "kernel_size": 21, "noise": 0.0, "kind": "camera_shake"}
TONE_HZ, SAMPLE_RATE = 440.0, 44100


def panned_frames(photo: torch.Tensor, count: int, size: tuple[int, int]) -> torch.Tensor:
    """``count`` crops of ``size`` moving left to right (and slightly down) across ``photo`` [H,W,C]."""
    width, height = size
    room_x, room_y = photo.shape[1] - width, photo.shape[0] - height
    if room_x < 0 or room_y < 0:
        raise SystemExit(f"{SOURCE} is smaller than the {width}x{height} frame")
    steps = [i / max(count - 1, 1) for i in range(count)]
    return torch.stack([photo[round(t * room_y):round(t * room_y) + height, round(t * room_x):round(t * room_x) + width]
                        for t in steps])


def tone(seconds: float) -> np.ndarray:
    """A mono sine at a quarter of full scale, as float32 [1, samples]."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.25 * np.sin(2 * math.pi * TONE_HZ * t)).astype(np.float32)[None]


def write_video(path: str, frames: torch.Tensor, audio: np.ndarray) -> None:
    import av  # ComfyUI's dependency, not the pack's: only this tool needs it

    with av.open(path, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.options = {"crf": "20"}
        sound = container.add_stream("aac", rate=SAMPLE_RATE)
        sound.layout = "mono"
        for pixels in (frames.clamp(0, 1) * 255).round().to(torch.uint8).numpy():
            container.mux(video.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(video.encode())
        chunk = 1024
        for start in range(0, audio.shape[1], chunk):
            frame = av.AudioFrame.from_ndarray(audio[:, start:start + chunk], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = SAMPLE_RATE, start
            container.mux(sound.encode(frame))
        container.mux(sound.encode())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=TARGET, help="where to write the .mp4")
    args = parser.parse_args(argv)
    with Image.open(SOURCE) as picture:
        photo = torch.from_numpy(np.asarray(picture.convert("RGB"), dtype=np.float32) / 255)
    sharp = panned_frames(photo, FPS * SECONDS, SIZE)
    blurred, _kernels = pack_module("nodes.blur_lab").SyntheticMotionBlur().blur(sharp, **BLUR)
    write_video(args.out, blurred, tone(SECONDS))
    print(f"{args.out}: {len(blurred)} frames {SIZE[0]}x{SIZE[1]} at {FPS} fps, {TONE_HZ:g} Hz tone, "
          f"{os.path.getsize(args.out)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
