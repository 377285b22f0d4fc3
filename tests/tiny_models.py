"""Tiny random HI-Diff checkpoints in the official release layout, for tests and the host harness.

Sizes are a reduced version of the GoPro architecture, built with the pack's own classes and saved
as the release does: ``{'params': state_dict}`` in ``net_g.pth``, ``net_le_dm.pth``, ``net_d.pth``.
"""
from __future__ import annotations

import os

import torch


def tiny_hidiff_states(seed: int = 0, realblur: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    from conftest import pack_module

    hd = pack_module("models.hidiff")
    torch.manual_seed(seed)
    activation = "lrelu" if realblur else "gelu"
    net_g = hd.Transformer(hd.TransformerConfig.standard(
        dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, heads=(1, 2, 2, 4), embed_dim=8, group=4,
        ffn_expansion_factor=2 if realblur else 2.66))
    net_le_dm = hd.LatentEncoder(hd.LatentEncoderConfig.standard(in_channels=3, embed_dim=8, block_num=1, activation=activation))
    if realblur:
        net_d = hd.SimpleDenoiser(32, 2)
    else:
        net_d = hd.MixerDenoiser.standard(channels=32, inner=16, block_num=4, group=4)
    return {"net_g": net_g.state_dict(), "net_le_dm": net_le_dm.state_dict(), "net_d": net_d.state_dict()}


def write_official_layout(folder: str | os.PathLike, states: dict[str, dict]) -> str:
    os.makedirs(folder, exist_ok=True)
    for part, state in states.items():
        torch.save({"params": state}, os.path.join(folder, f"{part}.pth"))
    return os.fspath(folder)


def prepare_models(models_dir: str | os.PathLike) -> None:
    """Write a tiny model wherever a bundled workflow's loader points (host harness hook)."""
    deblur = os.path.join(models_dir, "deblur")
    write_official_layout(os.path.join(deblur, "HI_Diff_GoPro"), tiny_hidiff_states(0))
