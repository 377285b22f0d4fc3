"""Classical baselines: deconvolution with the true kernel restores, and the blind estimate is a
valid kernel that resembles the true one and helps on a clearly blurred image."""
import pytest
import torch

from conftest import pack_module

blur = pack_module("models.blur")
classical = pack_module("models.classical")
metrics = pack_module("models.common.metrics")


@pytest.fixture(scope="module")
def scene():
    sharp = blur.dead_leaves(64, torch.Generator().manual_seed(11))[None]
    kernel, _ = blur.linear_kernel(11, 9, 20)
    return sharp, kernel, blur.convolve(sharp, kernel)


def test_non_blind_deconvolution_restores(scene):
    sharp, kernel, blurry = scene
    base = metrics.psnr(blurry, sharp).item()
    assert metrics.psnr(classical.wiener_deconvolve(blurry, kernel, 1e-3).clamp(0, 1), sharp).item() > base + 5
    assert metrics.psnr(classical.richardson_lucy(blurry, kernel, 25).clamp(0, 1), sharp).item() > base + 2


def test_blind_estimate_is_a_centred_kernel_close_to_the_truth(scene):
    sharp, kernel, blurry = scene
    restored, estimated = classical.blind_deblur(blurry, 11, gamma=1.0)
    k = estimated[0]
    assert k.shape == (11, 11) and k.min() >= 0 and k.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert max(abs(v) for v in blur.kernel_centroid(k)) <= 0.5
    assert (k - kernel).abs().sum() < (torch.eye(11)[5:6].T @ torch.eye(11)[5:6] - kernel).abs().sum()  # nearer than no blur
    assert metrics.psnr(restored, sharp).item() > metrics.psnr(blurry, sharp).item()
