"""The HI-Diff model bundled with the pack, so deblurring works with no download.

A compact HI-Diff (``training.PRESETS['compact']``) trained by ``tools/train_hidiff.py`` on synthetic
camera-shake blur of openly licensed photos and dead-leaves images; see ``default/MODEL_CARD.md`` for
its data, training and measured quality. Listed first by the loader node under :data:`DEFAULT_NAME`.
"""
from __future__ import annotations

import os

DEFAULT_NAME = "(bundled) hidiff_compact_synthetic"
DEFAULT_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default", "hidiff_compact_synthetic.safetensors")
MODEL_CARD = os.path.join(os.path.dirname(DEFAULT_PATH), "MODEL_CARD.md")


def default_available() -> bool:
    return os.path.isfile(DEFAULT_PATH)
