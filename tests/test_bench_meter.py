"""The one-step benchmark's meter: FLOP counts on the meta device match a hand computation, and both modes
multiply a part measured once by its count (tiles, or DeblurDiff's steps)."""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from bench_onestep import Meter  # noqa: E402


def test_flops_of_a_convolution_match_the_hand_count_times_the_tiles():
    with torch.device("meta"):
        conv = torch.nn.Conv2d(4, 8, 3, padding=1, bias=False)
        x = torch.randn(1, 4, 16, 16)
    meter = Meter(torch.device("meta"), flops=True)
    out = meter("conv", 3, lambda: conv(x))
    assert out.device.type == "meta"
    per_tile = 2 * 4 * 8 * 9 * 16 * 16  # a multiply and an add per weight per output pixel
    assert meter.parts["conv"] == (pytest.approx(per_tile / 1e12), 3)
    assert meter.total() == pytest.approx(3 * per_tile / 1e12)
    row = meter.row(method="m")
    assert "tflops" in row and "seconds" not in row and row["scaled"] is True


def test_timed_parts_are_seconds_multiplied_by_their_count():
    meter = Meter(torch.device("cpu"), flops=False)
    meter("once", 1, lambda: sum(range(1000)))
    meter("twice", 2, lambda: sum(range(1000)))
    (once, n1), (twice, n2) = meter.parts["once"], meter.parts["twice"]
    assert (n1, n2) == (1, 2) and once > 0 and twice > 0
    assert meter.total() == pytest.approx(once + 2 * twice)
    assert "seconds" in meter.row() and meter.row()["scaled"] is True
