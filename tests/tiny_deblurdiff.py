"""Tiny DeblurDiff models in the official ``model.pth`` layout, for tests and the bundled workflows.

* :func:`golden_state` — the tiny model the golden data was made with (tests/golden/
  make_deblurdiff_golden.py): regenerated from the key/shape manifest ``deblurdiff_shapes.json['tiny']``
  and the weight seed, instead of storing its ~74 MB.
* :func:`micro_state` — a smaller one (one residual block, 32 channels) for node and workflow tests,
  quick enough to run the workflows' default 50 steps: our modules built on the meta device, their
  state converted to the official layout by the pack's inverse conversion, filled with seeded values.
"""
from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest
import torch

from conftest import DATA, pack_module
from random_weights import random_state_dict

SHAPES_FILE = os.path.join(DATA, "deblurdiff_shapes.json")
GOLDEN_FILE = os.path.join(DATA, "deblurdiff_golden.pt")


def manifest(name: str = "tiny") -> dict:
    with open(SHAPES_FILE) as handle:
        return json.load(handle)[name]


def golden_state(weight_seed: int) -> dict[str, torch.Tensor]:
    return random_state_dict(manifest("tiny"), weight_seed)


def micro_config():
    sd21 = pack_module("models.sd21")
    dd = pack_module("models.deblurdiff")
    unet = sd21.UNetConfig(in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                           attention=(True, False), transformer_depth=(1, 1), context_dim=32, linear_projection=True)
    return dd.DeblurDiffConfig(
        unet=unet,
        controlnet=replace(unet, in_channels=12, out_channels=0),
        lkpn=replace(unet, in_channels=8, out_channels=100),
        vae=sd21.VAEConfig(channels=32, channel_mult=(1, 1, 1, 1), num_res_blocks=1),
        text_encoder=sd21.TextEncoderConfig(width=32, layers=2, mlp_width=64, embed_dim=32),
    )


def official_shapes(config) -> dict[str, list[int]]:
    """Key → shape of the official ``model.pth`` for a configuration (built on the meta device)."""
    dd = pack_module("models.deblurdiff")
    model = dd.DeblurDiff(config, device="meta")
    return {k: list(v.shape) for k, v in dd.pack_to_official(dd.model_states(model), config).items()}


def micro_state(seed: int = 0, config=None) -> dict[str, torch.Tensor]:
    return random_state_dict(official_shapes(config or micro_config()), seed)


def write_model(path: str | os.PathLike, state: dict) -> str:
    os.makedirs(os.path.dirname(os.fspath(path)), exist_ok=True)
    torch.save(state, path)
    return os.fspath(path)


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny networks run fastest on one thread, and far faster than on two when other processes share
    the cores (OpenMP workers then wait on each other). Import this fixture into a test module to use it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
