"""Tiny OSDD weights on the tiny SD 2.x base of tiny_sd.py: every part non-zero (as after training), so
tests see the skips, both adapters, the encoder LoRA and the gate at work."""
from __future__ import annotations

import os

import torch

from conftest import pack_module
from tiny_sd import write_single_file

sd21 = pack_module("models.sd21")
osdd = pack_module("models.osdd")
lora = pack_module("models.sd21.lora")


def tiny_base(path, seed: int = 0):
    """The tiny base written as a single-file checkpoint at ``path`` and loaded."""
    if not os.path.exists(path):
        write_single_file(path, seed)
    return sd21.load_base(os.fspath(path))


def randomize(model, seed: int = 0) -> None:
    """Non-zero skip norms, LoRA ups and gate, like a trained model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in model.evae.skips:
            block.norm2.weight.copy_(torch.randn(block.norm2.weight.shape, generator=g) * 0.5)
        for net in (model.unet, model.evae.vae):
            for layer in lora.lora_layers(net).values():
                for adapter in layer.adapters.values():
                    adapter.up.weight.copy_(torch.randn(adapter.up.weight.shape, generator=g) * 0.05)
        for p in model.gate.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        model.text.embedding.copy_(torch.randn(model.text.embedding.shape, generator=g))


def tiny_osdd(base_path, seed: int = 0, base_seed: int = 0):
    base = tiny_base(base_path, base_seed)
    torch.manual_seed(seed)
    model = osdd.OSDD.fresh(base, unet_rank=4, vae_rank=2)
    randomize(model, seed)
    return model.eval()


def write_tiny_osdd(path, base_path, seed: int = 0) -> str:
    model = tiny_osdd(base_path, seed)
    osdd.save_osdd(model, os.fspath(path), source="tests/tiny_osdd.py")
    return os.fspath(path)
