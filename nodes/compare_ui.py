"""The two images of a comparison, sent to the frontend's before/after viewer (js/deblur/compare.js).

A node returns ``{"ui": compare_ui(before, after, labels), "result": (...)}``: the first image of each
batch, as given (not resized or composited), saved into ComfyUI's temp folder like a preview.
"""
from __future__ import annotations

import torch

from . import host

UI_KEY = "deblur_compare"


def compare_ui(before: torch.Tensor, after: torch.Tensor, labels: tuple[str, str] = ("before", "after")) -> dict:
    saved_before = host.save_preview_images(before[:1], "deblur_compare_before")
    saved_after = host.save_preview_images(after[:1], "deblur_compare_after")
    if not (saved_before and saved_after):
        return {}
    return {UI_KEY: [{"before": saved_before[0], "after": saved_after[0], "labels": list(labels)}]}
