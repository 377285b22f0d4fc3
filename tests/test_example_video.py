"""The example clip's maker (tools/make_example_video.py) without PyAV: its pan and its tone, and the
committed clip stays small enough to ship with the pack."""
import os
import sys

import numpy as np
import torch

from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import make_example_video as maker  # noqa: E402  (imports av only when writing)


def test_the_pan_moves_a_full_sized_window_from_one_corner_to_the_other():
    photo = torch.arange(30 * 40, dtype=torch.float32).reshape(30, 40, 1).expand(30, 40, 3)
    frames = maker.panned_frames(photo, 5, (20, 10))
    assert frames.shape == (5, 10, 20, 3)
    assert torch.equal(frames[0], photo[:10, :20]) and torch.equal(frames[-1], photo[20:, 20:])
    starts = [int(f[0, 0, 0]) for f in frames]
    assert starts == sorted(starts) and len(set(starts)) == 5  # a slow pan: every frame moves on


def test_the_tone_is_a_quiet_sine_of_the_stated_pitch():
    wave = maker.tone(0.5)[0]
    assert wave.dtype == np.float32 and len(wave) == maker.SAMPLE_RATE // 2
    assert 0.24 < np.abs(wave).max() <= 0.25
    crossings = np.count_nonzero(np.diff(np.signbit(wave)))
    assert abs(crossings - 2 * maker.TONE_HZ * 0.5) <= 2


def test_the_committed_clip_is_small():
    assert os.path.getsize(maker.TARGET) < 300_000
