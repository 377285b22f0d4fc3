"""Blur Kernel Deconvolve (issue 16 item 1): closed-form deconvolution by any producer's BLUR_KERNEL."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, pack_module

nodes = pack_module("nodes.blur_lab")
blur = pack_module("models.blur")
kd = pack_module("models.classical.kernel_deconvolution")
metrics = pack_module("models.common.metrics")


def smooth_image(batch=1, h=64, w=64, c=3, seed=0):
    """Random but band-limited (so a well-posed kernel can be inverted almost exactly)."""
    noise = torch.rand(batch, c, h // 4, w // 4, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)


def kernel_of(k: torch.Tensor, info=None) -> dict:
    k = k.float() / k.sum()
    kernels = k.reshape(1, 1, 1, *k.shape) if k.ndim == 2 else k
    return blur.make_blur_kernel(kernels, None, [info or {"kind": "test"}] * kernels.shape[0])


def run(**kwargs):
    kwargs.setdefault("method", "wiener")
    kwargs.setdefault("colour_space", "stored values")
    return nodes.BlurKernelDeconvolve().deconvolve(**kwargs)[0]


def asymmetric_kernel(size=5):
    """A horizontal smear whose spectrum never vanishes (|K| >= 0.2): invertible."""
    k = torch.zeros(size, size, dtype=torch.float64)
    k[size // 2, size // 2:size // 2 + 3] = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    return k


def test_delta_kernel_equals_the_hand_computed_wiener_filter():
    """With k = δ the tapered copy is the reflect-padded image and the filter is 1 / (1 + λ|∇|²): computed here by hand."""
    x = smooth_image(h=20, w=24)
    delta = torch.zeros(1, 1, 1, 1, 1)
    delta[..., 0, 0] = 1
    lam = 0.05
    out = run(image=x.permute(0, 2, 3, 1), kernel=blur.make_blur_kernel(delta, None, [{}]), strength=lam, tile_size=0)
    margin = 2  # the taper's margin for a 1-pixel kernel: two kernel widths
    padded = torch.nn.functional.pad(x.double(), (margin,) * 4, mode="reflect")
    h, w = padded.shape[-2:]
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.fftfreq(w, dtype=torch.float64)[None, :]
    laplacian = (2 - 2 * torch.cos(2 * torch.pi * fx)) + (2 - 2 * torch.cos(2 * torch.pi * fy))
    expected = torch.fft.ifft2(torch.fft.fft2(padded) / (1 + lam * laplacian)).real[..., margin:-margin, margin:-margin]
    assert torch.allclose(out.permute(0, 3, 1, 2).double(), expected.clamp(0, 1), atol=1e-5)


def test_known_kernel_is_undone_away_from_the_borders():
    sharp = smooth_image(h=72, w=80)
    kernel = kernel_of(asymmetric_kernel())
    blurred = blur.convolve(sharp, kernel["kernels"][:, 0, 0])
    out = run(image=blurred.permute(0, 2, 3, 1), kernel=kernel, strength=1e-4, tile_size=0).permute(0, 3, 1, 2)
    inner = (..., slice(12, -12), slice(12, -12))
    before = (blurred - sharp)[inner].abs().max()
    after = (out - sharp)[inner].abs().max()
    assert after < 0.02 and after < before / 5, (float(before), float(after))


@pytest.mark.parametrize("method", ["wiener", "total_variation"])
def test_true_kernel_of_synthetic_camera_shake_gains_many_db(method):
    photo = np.asarray(Image.open(os.path.join(ROOT, "example_images", "deblur_example_cat_sharp.png")).convert("RGB"))
    sharp = torch.from_numpy(photo.copy()).float().div(255).permute(2, 0, 1)[None, :, :128, :128]
    settings = blur.BlurSettings(kind="camera_shake", kernel_size=15, intensity=0.7, noise=0.0, gamma=2.2)
    blurred, kernel = blur.synthesize(sharp, settings, torch.Generator().manual_seed(1))
    out = run(image=blurred.permute(0, 2, 3, 1), kernel=kernel, method=method, strength=1e-3,
              colour_space="linear light (photos)", tile_size=0).permute(0, 3, 1, 2)
    gain = float(metrics.psnr(out, sharp).mean() - metrics.psnr(blurred, sharp).mean())
    assert gain > 3.0, gain


def test_tiles_match_the_whole_image_and_odd_sizes_keep_their_shape():
    sharp = smooth_image(h=101, w=133, seed=3)
    kernel = kernel_of(asymmetric_kernel(7))
    blurred = blur.convolve(sharp, kernel["kernels"][:, 0, 0]).permute(0, 2, 3, 1)
    whole = run(image=blurred, kernel=kernel, strength=1e-3, tile_size=0)
    tiled = run(image=blurred, kernel=kernel, strength=1e-3, tile_size=64)
    assert tiled.shape == whole.shape == blurred.shape
    assert (tiled - whole).abs().max() < 2e-3  # every window sees a halo of real image around it


def test_batch_alpha_and_grey():
    sharp = smooth_image(batch=2, h=40, w=44)
    kernel = kernel_of(asymmetric_kernel())
    rgba = torch.cat([sharp, torch.rand(2, 1, 40, 44)], 1).permute(0, 2, 3, 1)
    out = run(image=rgba, kernel=kernel, strength=1e-3, tile_size=0)
    assert out.shape == rgba.shape and torch.equal(out[..., 3], rgba[..., 3])
    single = run(image=rgba[1:], kernel=kernel, strength=1e-3, tile_size=0)
    assert torch.allclose(out[1:], single, atol=1e-6)  # one kernel serves the whole batch
    grey = run(image=rgba[..., :1], kernel=kernel, strength=1e-3, tile_size=0)
    assert grey.shape == (2, 40, 44, 1)


def test_a_per_pixel_map_of_one_kernel_equals_the_uniform_kernel():
    """Blur Kernel Estimate's layout (one kernel per 8x8 cell, stride_px) with every cell alike."""
    sharp = smooth_image(h=48, w=56)
    k = asymmetric_kernel().float()
    k = k / k.sum()
    uniform = kernel_of(k)
    per_cell = blur.make_blur_kernel(k.expand(1, 6, 7, *k.shape).clone(), None, [{"kind": "estimated", "stride_px": 8}])
    blurred = blur.convolve(sharp, uniform["kernels"][:, 0, 0]).permute(0, 2, 3, 1)
    a = run(image=blurred, kernel=uniform, strength=1e-3, tile_size=0)
    b = run(image=blurred, kernel=per_cell, strength=1e-3, tile_size=0)
    assert torch.allclose(a, b, atol=1e-5)


def test_spatially_varying_kernels_use_the_local_kernel():
    """Left half blurred one way, right half another: each half comes back closer than one kernel for both."""
    sharp = smooth_image(h=64, w=192, seed=4)
    left, right = asymmetric_kernel(), asymmetric_kernel().T.contiguous()
    kl, kr = (kernel_of(k)["kernels"][:, 0, 0] for k in (left, right))
    blurred = torch.cat([blur.convolve(sharp, kl)[..., :96], blur.convolve(sharp, kr)[..., 96:]], -1)
    grid = torch.stack([kl[0], kr[0]]).reshape(1, 1, 2, *kl.shape[-2:]).float()
    varying = blur.make_blur_kernel(grid.repeat_interleave(12, 2).repeat(1, 8, 1, 1, 1), None, [{"kind": "test", "stride_px": 8}])
    out = run(image=blurred.permute(0, 2, 3, 1), kernel=varying, strength=1e-4, tile_size=0).permute(0, 3, 1, 2)
    only_left = run(image=blurred.permute(0, 2, 3, 1), kernel=kernel_of(left), strength=1e-4, tile_size=0).permute(0, 3, 1, 2)
    right_half = (..., slice(8, -8), slice(120, -8))
    assert (out - sharp)[right_half].abs().mean() < 0.5 * (only_left - sharp)[right_half].abs().mean()


@pytest.mark.parametrize("kernels, words", [
    (torch.full((1, 1, 1, 5, 5), float("nan")), "NaN"),
    (torch.zeros(1, 1, 1, 5, 5), "zero"),
    (torch.ones(1, 1, 1, 4, 4) / 16, "odd"),
    (torch.ones(3, 1, 1, 5, 5) / 25, "batch of 2"),
    (torch.ones(1, 50, 50, 5, 5) / 25, "does not match"),
])
def test_bad_kernels_get_named_errors(kernels, words):
    value = {"kernels": kernels, "level": None, "info": [{"kind": "test"}] * kernels.shape[0]}
    with pytest.raises(ValueError, match=words):
        run(image=torch.rand(2, 32, 32, 3), kernel=value, strength=1e-3, tile_size=0)


def test_a_per_cell_grid_from_another_image_size_is_refused():
    value = blur.make_blur_kernel(torch.ones(1, 4, 4, 5, 5) / 25, None, [{"kind": "estimated", "stride_px": 8}])
    with pytest.raises(ValueError, match="does not match the 64x64 image"):
        run(image=torch.rand(1, 64, 64, 3), kernel=value, strength=1e-3, tile_size=0)


def test_settings_are_checked():
    kernel = kernel_of(asymmetric_kernel())
    with pytest.raises(ValueError, match="at least 32"):
        kd.DeconvolutionSettings(tile=16)
    with pytest.raises(ValueError, match="positive"):
        kd.DeconvolutionSettings(strength=float("nan"))
    with pytest.raises(ValueError, match="colour space"):
        run(image=torch.rand(1, 32, 32, 3), kernel=kernel, strength=1e-3, tile_size=0, colour_space="cmyk")
