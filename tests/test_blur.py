"""Blur synthesis: kernel properties, convolution semantics, frame averaging, degradations."""
import pytest
import torch

from conftest import pack_module

blur = pack_module("models.blur")
convolve_mod = pack_module("models.blur.convolve")


def shake(seed, intensity=0.6, size=31):
    return blur.camera_shake_kernel(size, intensity, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_shake_kernel_is_a_centred_distribution(seed):
    kernel, info = shake(seed)
    assert kernel.shape == (31, 31) and info.kind == "camera_shake"
    assert kernel.min() >= 0
    assert kernel.sum() == pytest.approx(1.0, abs=1e-5)
    dy, dx = blur.kernel_centroid(kernel)
    assert abs(dy) < 1e-4 and abs(dx) < 1e-4
    assert info.length_px >= 0.6 * 30 - 1e-6  # at least the extent (a straight path)
    assert kernel[:, 0].sum() + kernel[:, -1].sum() + kernel[0].sum() + kernel[-1].sum() == 0  # fits with room


def test_shake_kernel_is_reproducible_with_a_seed_and_differs_between_seeds():
    assert torch.equal(shake(5)[0], shake(5)[0])
    assert not torch.equal(shake(5)[0], shake(6)[0])


@pytest.mark.parametrize("seed", [0, 7])
def test_kernel_grows_with_intensity(seed):
    spreads = [blur.kernel_spread(shake(seed, s)[0]) for s in (0.1, 0.3, 0.5, 0.7, 1.0)]
    assert all(a < b for a, b in zip(spreads, spreads[1:])), spreads
    support = [int((shake(seed, s)[0] > 1e-6).sum()) for s in (0.1, 1.0)]
    assert support[0] < support[1]


def test_zero_intensity_is_the_identity_and_even_sizes_are_refused():
    kernel, _ = shake(0, 0.0, 9)
    assert kernel[4, 4] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="odd"):
        blur.camera_shake_kernel(8, 0.5)


def test_linear_kernel_lies_along_its_angle():
    horizontal, _ = blur.linear_kernel(15, 10, 0)
    assert horizontal.sum() == pytest.approx(1.0, abs=1e-5)
    assert horizontal[7].sum() == pytest.approx(1.0, abs=1e-5)  # all mass on the centre row
    assert (horizontal[7, 2:13] > 0).all() and horizontal[7, :2].sum() == 0
    vertical, _ = blur.linear_kernel(15, 10, 90)
    assert torch.allclose(vertical, horizontal.T, atol=1e-6)
    diagonal, _ = blur.linear_kernel(15, 10, 37)
    assert max(abs(v) for v in blur.kernel_centroid(diagonal)) < 1e-4
    with pytest.raises(ValueError, match="does not fit"):
        blur.linear_kernel(9, 12)


def test_rasterize_is_sub_pixel():
    kernel = blur.rasterize(torch.tensor([[0.25, -0.5]]), 5)
    # a single point a quarter pixel right, half a pixel up: bilinear weights over four pixels
    expected = {(1, 2): 0.375, (1, 3): 0.125, (2, 2): 0.375, (2, 3): 0.125}
    for (y, x), w in expected.items():
        assert kernel[y, x] == pytest.approx(w)
    assert blur.kernel_centroid(kernel) == pytest.approx((-0.5, 0.25))


def naive_convolution(image, kernel):
    """out(p) = sum_u K[c+u] img(p-u), with reflected borders, written out as loops."""
    c, (h, w) = kernel.shape[0] // 2, image.shape[-2:]
    reflect = lambda i, n: -i if i < 0 else (2 * (n - 1) - i if i >= n else i)
    out = torch.zeros_like(image)
    for y in range(h):
        for x in range(w):
            for i in range(kernel.shape[0]):
                for j in range(kernel.shape[1]):
                    out[..., y, x] += kernel[i, j] * image[..., reflect(y - (i - c), h), reflect(x - (j - c), w)]
    return out


@pytest.mark.parametrize("size", [5, 17])  # direct and FFT paths
def test_blur_equals_convolution_with_the_returned_kernel(size):
    generator = torch.Generator().manual_seed(1)
    image = torch.rand(1, 2, 12, 14, generator=generator)
    kernel = torch.rand(size, size, generator=generator)
    kernel /= kernel.sum()
    ours = blur.convolve(image, kernel)
    assert torch.allclose(ours, naive_convolution(image, kernel), atol=1e-5)


def test_a_point_is_smeared_into_the_kernel_picture():
    kernel, _ = blur.linear_kernel(9, 6, 30)
    point = torch.zeros(1, 1, 21, 21)
    point[..., 10, 10] = 1
    out = blur.convolve(point, kernel, border="zeros")
    assert torch.allclose(out[0, 0, 6:15, 6:15], kernel, atol=1e-6)


def test_synthesize_returns_the_kernel_it_applied_per_image():
    settings = blur.BlurSettings(kernel_size=15, intensity=(0.3, 0.9))
    sharp = torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    blurry, bk = blur.synthesize(sharp, settings, torch.Generator().manual_seed(4))
    assert bk["kernels"].shape == (3, 1, 1, 15, 15)
    assert len({round(i["intensity"], 6) for i in bk["info"]}) == 3  # one kernel each
    for i in range(3):
        assert torch.allclose(blurry[i:i + 1], blur.convolve(sharp[i:i + 1], bk["kernels"][i, 0, 0]).clamp(0, 1), atol=1e-5)
    again, bk2 = blur.synthesize(sharp, settings, torch.Generator().manual_seed(4))
    assert torch.equal(again, blurry) and torch.equal(bk2["kernels"], bk["kernels"])


def test_spatially_varying_blur_blends_kernels_and_both_algorithms_agree(monkeypatch):
    generator = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 20, 24, generator=generator)
    k1, _ = blur.linear_kernel(7, 6, 0)
    k2, _ = blur.linear_kernel(7, 6, 90)
    same = torch.stack([k1] * 4).view(1, 2, 2, 7, 7)
    assert torch.allclose(blur.blur(image, same), blur.convolve(image, k1), atol=1e-5)
    mixed = torch.stack([k1, k2, k2, k1]).view(1, 2, 2, 7, 7)
    blended = blur.blur(image, mixed)
    # the top-left corner lies entirely in the first cell, the top-right in the second
    assert torch.allclose(blended[..., :3, :3], blur.convolve(image, k1)[..., :3, :3], atol=1e-5)
    assert torch.allclose(blended[..., :3, -3:], blur.convolve(image, k2)[..., :3, -3:], atol=1e-5)
    monkeypatch.setattr(convolve_mod, "BLEND_UP_TO", 1)  # force the per-pixel route
    assert torch.allclose(blur.blur(image, mixed), blended, atol=1e-5)
    weights = blur.grid_weights((2, 2), 20, 24)
    assert torch.allclose(weights.sum(0), torch.ones(20, 24))


def test_frame_averaging_matches_convolution_and_carries_the_level():
    # a camera translating one pixel per frame: the average of the frames is the image convolved
    # with the kernel made of those displacements
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    shifts = [(0, -2), (0, -1), (1, 0), (1, 1), (2, 1)]
    frames = torch.cat([torch.roll(image, s, dims=(-2, -1)) for s in shifts])
    pair = blur.average_frames(frames, gamma=1.0)
    assert pair.frames == 5 and pair.level == 80 and blur.blur_level(11) == 200 and blur.blur_level(1) == 0
    assert torch.equal(pair.sharp, frames[2])
    kernel = torch.zeros(5, 5)
    for dy, dx in shifts:
        kernel[2 + dy, 2 + dx] += 1 / 5
    assert torch.allclose(pair.blurry[None], blur.convolve(image, kernel, border="circular"), atol=1e-6)
    linear = blur.average_frames(frames, gamma=2.2).blurry
    assert torch.allclose(linear, (frames.pow(2.2).mean(0)).pow(1 / 2.2), atol=1e-5)
    pairs = blur.frame_pairs(torch.cat([frames, frames]), 3)
    assert [p.start for p in pairs] == [0, 3, 6] and all(p.level == 40 for p in pairs)
    with pytest.raises(ValueError, match="odd"):
        blur.average_frames(frames[:4])
    assert blur.frames_for_level(200) == 11


def test_degradations_noise_gamma_jpeg():
    settings = blur.BlurSettings(kernel_size=9, intensity=0.5, noise=0.05, gamma=2.2, jpeg_quality=40)
    sharp = torch.full((1, 3, 32, 32), 0.5)
    blurry, _ = blur.synthesize(sharp, settings, torch.Generator().manual_seed(0))
    assert blurry.min() >= 0 and blurry.max() <= 1
    assert 0.02 < (blurry - 0.5).std() < 0.08  # the noise (a flat image stays flat under blur)
    assert torch.allclose((blurry * 255).round(), blurry * 255, atol=1e-3)  # JPEG decodes to 8-bit
    clean = blur.BlurSettings(kernel_size=9, intensity=0.5, gamma=2.2)
    assert torch.allclose(blur.synthesize(sharp, clean)[0], sharp, atol=1e-5)  # flat stays flat in linear light
    with pytest.raises(ValueError):
        blur.BlurSettings(kernel_size=9, intensity=(0.8, 0.2))


def test_blur_kernel_type_is_validated():
    kernels = torch.stack([shake(0, 0.5, 9)[0], shake(1, 0.5, 9)[0]])
    value = blur.make_blur_kernel(kernels, level=[None, 40], info=[{"kind": "a"}, {"kind": "b"}])
    assert value["kernels"].shape == (2, 1, 1, 9, 9)
    assert blur.select(value, 1)["level"] == [40]
    with pytest.raises(ValueError, match="sum to 1"):
        blur.check_blur_kernel({"kernels": torch.ones(1, 1, 1, 3, 3)})
    with pytest.raises(ValueError, match="odd"):
        blur.check_blur_kernel({"kernels": torch.ones(1, 1, 1, 4, 4) / 16})
    per_pixel = blur.kernel_map(value["kernels"], 5, 6)
    assert per_pixel.shape == (2, 81, 5, 6) and torch.allclose(per_pixel[0, :, 2, 3], kernels[0].flatten())


def test_dead_leaves_is_seeded_and_covers_the_canvas():
    a = blur.dead_leaves(48, torch.Generator().manual_seed(3))
    assert a.shape == (3, 48, 48) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, blur.dead_leaves(48, torch.Generator().manual_seed(3)))
    assert a.std() > 0.1


def test_blur_mix_draws_every_kind_of_degradation_and_sharp_pairs():
    mix = blur.BlurMix(kernel_size=15, sharp_share=0.2, srgb_share=0.5, linear_share=0.3, jpeg_share=0.3, noise=(0.0, 0.02))
    generator = torch.Generator().manual_seed(0)
    draws = [mix.draw(generator) for _ in range(400)]
    sharp = sum(d is None for d in draws)
    blurred = [d for d in draws if d is not None]
    assert 50 < sharp < 110  # about 20 %
    srgb = sum(d.gamma == 1.0 for d in blurred) / len(blurred)
    linear = sum(d.kind == "linear" for d in blurred) / len(blurred)
    jpeg = [d.jpeg_quality for d in blurred if d.jpeg_quality]
    assert 0.4 < srgb < 0.6 and 0.2 < linear < 0.4 and {d.gamma for d in blurred} == {1.0, 2.2}
    assert 0.2 < len(jpeg) / len(blurred) < 0.4 and 60 <= min(jpeg) and max(jpeg) <= 95
    assert all(d.kernel_size == 15 and d.noise[0] == d.noise[1] <= 0.02 for d in blurred)
    again = [mix.draw(torch.Generator().manual_seed(0)) for _ in range(1)]
    assert again[0] == draws[0]
    with pytest.raises(ValueError, match="sharp_share"):
        blur.BlurMix(sharp_share=1.5)
    with pytest.raises(ValueError, match="JPEG quality"):
        blur.BlurMix(jpeg_quality=(90, 50))


def test_patch_sampler_with_a_mix_gives_identical_sharp_pairs_and_blurred_ones():
    datasets = pack_module("models.blur.datasets")

    class Folder:
        def __len__(self):
            return 1

        def __getitem__(self, index):
            return blur.dead_leaves(96, torch.Generator().manual_seed(3))

    sampler = datasets.PatchSampler(Folder(), 32, 16, 1, blur.BlurMix(kernel_size=15, sharp_share=0.3, noise=(0.0, 0.0), jpeg_share=0.0))
    blurry, sharp = sampler.next_batch()
    same = [torch.equal(b, s) for b, s in zip(blurry, sharp)]
    assert 0 < sum(same) < len(same)  # some sharp pairs pass through unchanged, the rest are blurred
    assert all((b - s).abs().mean() > 1e-3 for b, s, equal in zip(blurry, sharp, same) if not equal)
