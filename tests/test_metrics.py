"""PSNR and SSIM against known values: analytic cases and scikit-image's figures
(tests/golden/make_metrics_golden.py regenerates them)."""
import math

import pytest
import torch

from conftest import pack_module

metrics = pack_module("models.common.metrics")
visual = pack_module("models.common.visual")


def golden_images():
    y, x = torch.meshgrid(torch.arange(40, dtype=torch.float64), torch.arange(48, dtype=torch.float64), indexing="ij")
    a = torch.stack([0.5 + 0.4 * torch.sin(x / 3.0 + c) * torch.cos(y / 5.0 - c) for c in range(3)])
    b = (a + 0.08 * torch.sin(x * 1.7 + y * 0.9) - 0.03).clamp(0, 1)
    return a[None], b[None]


def test_psnr_and_ssim_match_scikit_image():
    a, b = golden_images()
    assert metrics.psnr(a, b).item() == pytest.approx(23.872999335453237, abs=1e-4)
    assert metrics.ssim(a, b).item() == pytest.approx(0.856051887204411, abs=1e-5)


def test_known_values():
    a = torch.full((2, 3, 16, 16), 0.5)
    assert metrics.psnr(a, a + 0.1).tolist() == pytest.approx([20.0, 20.0], abs=1e-4)  # MSE 0.01
    assert math.isinf(metrics.psnr(a, a)[0])
    assert metrics.ssim(a, a).tolist() == pytest.approx([1.0, 1.0])
    # flat images: only the luminance term is left, (2ab + C1) / (a² + b² + C1)
    c1 = 0.01 ** 2
    assert metrics.ssim(a, a * 0 + 0.3)[0].item() == pytest.approx((2 * 0.5 * 0.3 + c1) / (0.25 + 0.09 + c1), abs=1e-6)
    noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert metrics.ssim(noise, 1 - noise)[0] < 0  # anti-correlated structure
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(a, a[:, :, :8])


def test_heatmap_and_composites():
    a = torch.zeros(1, 3, 20, 30)
    b = a.clone()
    b[..., :, 15:] = 0.5
    heat = visual.error_heatmap(a, b)
    assert heat.shape == (1, 3, 20, 30)
    assert heat[0, :, 5, 2].sum() < 0.1 and heat[0, :, 5, 20].sum() > 2.0  # dark where equal, bright where not
    split = visual.split_view(a[0], b[0] + 0.2, 0.5, line=0)
    assert torch.equal(split[:, 10:, :15], a[0, :, 10:, :15]) and torch.allclose(split[:, 10:, 15:], torch.full((3, 10, 15), 0.7))
    row = visual.side_by_side([a[0], b[0]], ["blurry", "sharp"], gap=4)
    assert row.shape == (3, 20, 64)
    assert not torch.equal(visual.label(a[0], "text"), a[0])
