"""The blur-lab nodes through their ComfyUI entry points."""
import pytest
import torch

from conftest import pack_module

nodes = pack_module("nodes.blur_lab")
blur = pack_module("models.blur")


def image(batch=1, h=40, w=48, c=3, seed=0):
    return torch.rand(batch, h, w, c, generator=torch.Generator().manual_seed(seed))


def run(cls, **kwargs):
    out = getattr(cls(), cls.FUNCTION)(**kwargs)
    return out["result"] if isinstance(out, dict) else out


def test_synthetic_motion_blur_node_blurs_with_the_kernel_it_returns():
    sharp = image(2)
    blurred, kernel = run(nodes.SyntheticMotionBlur, image=sharp, seed=3, intensity=0.6, kernel_size=15, noise=0.0)
    assert blurred.shape == sharp.shape and kernel["kernels"].shape == (2, 1, 1, 15, 15)
    assert kernel["info"][0]["seed"] == 3 and kernel["info"][0]["kind"] == "camera_shake"
    expected = blur.convolve(sharp.permute(0, 3, 1, 2), kernel["kernels"][:, 0, 0]).clamp(0, 1).permute(0, 2, 3, 1)
    assert torch.allclose(blurred, expected, atol=1e-5)
    again, _ = run(nodes.SyntheticMotionBlur, image=sharp, seed=3, intensity=0.6, kernel_size=15, noise=0.0)
    assert torch.equal(again, blurred)


def test_synthetic_motion_blur_options_and_alpha():
    rgba = image(1, c=4)
    blurred, kernel = run(nodes.SyntheticMotionBlur, image=rgba, seed=0, intensity=0.5, kernel_size=9, noise=0.02,
                          kind="linear", regions=2, camera_gamma=2.2, jpeg_quality=80)
    assert blurred.shape == rgba.shape and torch.equal(blurred[..., 3], rgba[..., 3])
    assert kernel["kernels"].shape == (1, 2, 2, 9, 9)
    with pytest.raises(ValueError, match="odd"):
        run(nodes.SyntheticMotionBlur, image=rgba, seed=0, intensity=0.5, kernel_size=10, noise=0.0)


def test_kernel_preview_is_readable_and_sends_the_kernels_to_the_frontend():
    _, kernel = run(nodes.SyntheticMotionBlur, image=image(2), seed=1, intensity=0.8, kernel_size=21, noise=0.0, regions=2)
    out = nodes.BlurKernelPreview().preview(kernel, size=64)
    (picture,) = out["result"]
    assert picture.shape == (2, 128, 128, 3) and picture.max() > 0.9  # 2x2 grid of 64 px kernels, peak bright
    assert len(out["ui"]["deblur_kernels"]) == 2
    with pytest.raises(ValueError, match="BLUR_KERNEL"):
        nodes.BlurKernelPreview().preview("not a kernel")


def test_metrics_node_reports_psnr_ssim_and_a_heatmap():
    reference = image(1)
    restored = (reference + 0.1).clamp(0, 1)
    report, heat, p, s, gain = run(nodes.DeblurMetrics, restored=restored, reference=reference, heatmap_scale=0.25)
    expected = pack_module("models.common.metrics").psnr(
        (restored.permute(0, 3, 1, 2) * 255).round() / 255, (reference.permute(0, 3, 1, 2) * 255).round() / 255).item()
    assert p == pytest.approx(expected, abs=1e-3) and 0 < s < 1
    assert "PSNR" in report and "SSIM" in report and heat.shape == reference.shape
    assert gain == 0.0 and "connect the blurry input" in report
    _, _, same, one, _ = run(nodes.DeblurMetrics, restored=reference, reference=reference, heatmap_scale=0.25)
    assert same == float("inf") or same > 100
    with pytest.raises(ValueError, match="same size"):
        run(nodes.DeblurMetrics, restored=image(1, 20, 20), reference=reference, heatmap_scale=0.25)


def test_metrics_node_reports_the_blurry_input_and_the_gain():
    reference = image(2, seed=5)
    noise = torch.randn(reference.shape, generator=torch.Generator().manual_seed(1))
    blurry, restored = ((reference + sigma * noise).clamp(0, 1) for sigma in (0.2, 0.05))
    report, _, p, s, gain = run(nodes.DeblurMetrics, restored=restored, reference=reference, heatmap_scale=0.25, blurry=blurry)
    metrics = pack_module("models.common.metrics")
    to8 = lambda x: (x.permute(0, 3, 1, 2) * 255).round() / 255
    before = metrics.psnr(to8(blurry), to8(reference)).mean().item()
    assert gain == pytest.approx(p - before, abs=1e-3) and gain > 5
    assert f"blurry {before:.2f} dB" in report and f"gain {gain:+.2f} dB" in report and "deblurring helped" in report
    report, _, _, _, worse = run(nodes.DeblurMetrics, restored=blurry, reference=reference, heatmap_scale=0.25, blurry=restored)
    assert worse == pytest.approx(-gain, abs=1e-3) and "did not help" in report
    # one reference and one blurry image serve a batch of restored ones
    _, _, _, _, each = run(nodes.DeblurMetrics, restored=restored, reference=reference[:1], heatmap_scale=0.25, blurry=blurry[:1])
    first = metrics.psnr(to8(restored), to8(reference[:1].expand_as(restored))) - metrics.psnr(to8(blurry[:1]), to8(reference[:1]))
    assert each == pytest.approx(first.mean().item(), abs=1e-3)
    with pytest.raises(ValueError, match="blurry is 20x20"):
        run(nodes.DeblurMetrics, restored=restored, reference=reference, heatmap_scale=0.25, blurry=image(1, 20, 20))


@pytest.mark.parametrize("mode", ["side_by_side", "split"])
def test_compare_node(mode):
    a, b = image(2), image(1, seed=1)
    (out,) = run(nodes.DeblurCompare, image_a=a, image_b=b, mode=mode, split_position=0.25, label_a="blurry", label_b="")
    assert out.shape[0] == 2 and out.shape[1] == 40
    assert out.shape[2] == (48 * 2 + 4 if mode == "side_by_side" else 48)
    if mode == "split":  # right of the divider (below the label band) is image_b
        assert torch.allclose(out[0, 30:, 20:], b[0, 30:, 20:], atol=1e-6)
