"""The training-cost benchmark's arithmetic: AdamW's bytes, the activation extrapolation, the GPU pick and the
estimated rows it prints (no model is built)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import training_cost as tc  # noqa: E402


def test_static_bytes_are_fp32_weights_plus_grads_and_two_adamw_moments_of_the_trained_part():
    # 1000 parameters, 10 trained: 4 B each + (4 B gradient + 2 × 4 B AdamW moments) per trained one
    assert tc.static_bytes(1000, 10) == 4 * 1000 + 12 * 10
    assert tc.static_bytes(865_910_724, 0) == 4 * 865_910_724  # a frozen UNet: its fp32 weights only


def test_activations_follow_the_line_through_the_two_largest_measured_crops():
    points = [(128 ** 2, 1.0e9), (192 ** 2, 2.0e9), (64 ** 2, 5.0e8)]
    slope = 1.0e9 / (192 ** 2 - 128 ** 2)
    assert tc.extrapolate(points, 256 ** 2) == pytest.approx(2.0e9 + slope * (256 ** 2 - 192 ** 2))


def test_smallest_gpu_adds_allocator_headroom_and_the_cuda_context():
    assert tc.smallest_gpu(6.0e9) == "8 GB"  # 6 × 1.1 + 0.5 = 7.1 GB
    assert tc.smallest_gpu(7.0e9) == "12 GB"  # 8.2 GB does not fit 8 GB
    assert tc.smallest_gpu(100e9) == "> 80 GB"


def test_an_estimated_row_is_marked_and_built_from_two_smaller_measured_crops():
    static = tc.static_bytes(1000, 100)
    rows = [{"method": "FideDiff", "stage": "control", "precision": "fp32", "ckpt": "no", "crop": c, "trained": 100,
             "frozen": 900, "static": static, "peak": static + a, "seconds": 1.0} for c, a in ((128, 1000), (192, 2000))]
    row = tc.estimated_rows(rows, 256, "fp32", "no", "FideDiff", "control")
    assert row["estimated"] and row["seconds"] is None
    assert row["peak"] == pytest.approx(static + tc.extrapolate([(128 ** 2, 1000), (192 ** 2, 2000)], 256 ** 2))
    assert "(estimated)" in tc.table([row]) and "(estimated)" not in tc.table(rows)
    one = tc.estimated_rows(rows[:1], 256, "fp32", "no", "FideDiff", "control")  # one crop: in proportion to pixels
    assert one["peak"] == pytest.approx(static + 1000 * 4)
    assert tc.estimated_rows(rows, 128, "fp32", "no", "FideDiff", "control") is None  # nothing smaller measured
