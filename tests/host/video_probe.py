"""Describe two video files as JSON, for the host tests (run with the host's python: it has PyAV,
the pack's test python need not):  python video_probe.py SOURCE SAVED

Prints each file's frame count, frame rate, size and audio (stream count, seconds), and the mean
absolute difference of their decoded frames in 8-bit levels (when both have as many frames, same size).
"""
import json
import sys

import av
import numpy as np


def describe(path: str) -> tuple[dict, np.ndarray]:
    with av.open(path) as container:
        video = container.streams.video[0]
        rate = float(video.average_rate)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(path) as container:
        audio = [s for s in container.streams if s.type == "audio"]
        samples = sum(f.samples for f in container.decode(audio=0)) if audio else 0
        sample_rate = audio[0].rate if audio else 0
    return {"frames": len(frames), "fps": rate, "width": frames.shape[2], "height": frames.shape[1],
            "audio_streams": len(audio), "audio_seconds": samples / sample_rate if sample_rate else 0.0}, frames


def main(source: str, saved: str) -> None:
    (a, frames_a), (b, frames_b) = describe(source), describe(saved)
    same_shape = frames_a.shape == frames_b.shape
    difference = float(np.abs(frames_a.astype(np.int16) - frames_b).mean()) if same_shape else None
    print(json.dumps({"source": a, "saved": b, "mean_abs_difference": difference}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
