"""Tiny FideDiff adapters for the tiny SD bases of tiny_sd.py (tests, bundled-workflow runs)."""
from __future__ import annotations

import os

import torch

from conftest import pack_module

sd21 = pack_module("models.sd21")
fd = pack_module("models.fidediff")
KERNEL_SIZE = 5


def _randomize(tensors, generator, scale):
    with torch.no_grad():
        for tensor in tensors:
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * scale)


def tiny_estimator(seed: int = 0, kernel_size: int = 7):
    """A small M + T (random), 7x7 kernels: the adapter's KCN (5x5) sees them fitted to its size."""
    est = pack_module("models.fidediff.estimator")
    training = pack_module("models.fidediff.estimator_training")
    torch.manual_seed(seed)
    return training.build_estimator(est.EstimatorConfig(kernel_size=kernel_size, basis=3, widths=(8, 12, 16)),
                                    est.RegressorConfig(kernel_size=kernel_size, width=8, layers=2))


def write_adapter(path, base_path, latent_downsample: int = 4, with_kcn: bool = True, seed: int = 0,
                  fingerprint: str | None = None, with_estimator: bool = True) -> str:
    """A FideDiff adapter with random non-zero LoRA, text embedding, (optionally) KCN outputs and estimator."""
    path = os.fspath(path)
    g = torch.Generator().manual_seed(seed)
    base = sd21.load_base(base_path)
    sd21.inject_lora(base.unet, "fidediff", rank=4)
    layers = sd21.lora.lora_layers(base.unet).values()
    _randomize([layer.adapters["fidediff"].up.weight for layer in layers], g, 0.02)
    lora_state = sd21.adapter_state(base.unet, "fidediff")
    sd21.merge_adapters(base.unet)
    sd21.unwrap_lora(base.unet)
    kcn_state = None
    if with_kcn:
        kcn = fd.KernelControlNet.from_unet(base.unet, base.unet_config, KERNEL_SIZE ** 2)
        _randomize([kcn.filter_out.weight, kcn.controlnet_mid_block.weight] + [c.weight for c in kcn.controlnet_down_blocks], g, 0.02)
        kcn_state = kcn.state_dict()
    text = torch.randn(1, 77, base.unet_config.context_dim, generator=g) * 0.1
    estimator = None
    if with_estimator:
        estimator = pack_module("models.fidediff.estimator_model").estimator_state(tiny_estimator(seed))
    fd.save_adapter(path, lora_state, text, kcn_state, estimator, metadata={
        "latent_downsample": latent_downsample, "kernel_size": KERNEL_SIZE,
        "base_fingerprint": fingerprint or base.fingerprint, "base_name": os.path.basename(os.fspath(base_path)),
        "prediction": base.prediction})
    return path
