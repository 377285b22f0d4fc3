"""FideDiff nodes with a tiny base and adapter: listing and loading (base from the host's checkpoints
folder), the one-node deblur (alpha, grey, progress, Cancel), the stages with a BLUR_KERNEL."""
import pytest
import torch

from conftest import pack_module
from tiny_deblurdiff import single_thread  # noqa: F401  (autouse fixture)
from tiny_fidediff import KERNEL_SIZE, write_adapter
from tiny_sd import write_single_file

nodes = pack_module("nodes.fidediff")
host = pack_module("nodes.host")
blur_kernel = pack_module("models.blur.blur_kernel")
BASE = "checkpoints/v2-1_512-ema-pruned.safetensors"


@pytest.fixture
def handle(models_dir):
    base = write_single_file(models_dir.parent / "checkpoints" / "v2-1_512-ema-pruned.safetensors")
    write_adapter(models_dir / "FideDiff" / "tiny_d4.safetensors", base, 4)
    assert BASE in pack_module("models.sd21.base_files").base_choices()  # found beside models/deblur, as in ComfyUI
    assert nodes.list_adapters() == ["FideDiff/tiny_d4.safetensors"]
    (loaded,) = nodes.FideDiffLoader().load(BASE, "FideDiff/tiny_d4.safetensors", "auto")
    return loaded


def test_missing_files_are_explained(models_dir, monkeypatch):
    monkeypatch.setenv("COMFYUI_DEBLUR_CHECKPOINTS", "")
    assert nodes.list_adapters() == [nodes.NO_ADAPTER]
    assert nodes.FideDiffLoader.INPUT_TYPES()["required"]["base"][0] == [nodes.NO_BASE]
    with pytest.raises(FileNotFoundError, match="models/checkpoints"):
        nodes.FideDiffLoader().load(nodes.NO_BASE, nodes.NO_ADAPTER)


def test_deblur_keeps_alpha_and_grey_and_is_deterministic(handle):
    rgba = torch.rand(1, 30, 21, 4, generator=torch.Generator().manual_seed(0))
    (out,) = nodes.FideDiffDeblur().deblur(handle, rgba)
    assert out.shape == rgba.shape and torch.equal(out[..., 3], rgba[..., 3]) and 0 <= out.min() and out.max() <= 1
    assert not torch.equal(out[..., :3], rgba[..., :3])
    assert torch.equal(nodes.FideDiffDeblur().deblur(handle, rgba)[0], out)
    (grey,) = nodes.FideDiffDeblur().deblur(handle, rgba[..., :1], latent_downsample="8", timestep=120.0)
    assert grey.shape == (1, 30, 21, 1)


def test_progress_and_cancel(handle, monkeypatch):
    updates = []

    class Counting(host.Progress):
        def update(self, n=1):
            updates.append(n)
            if len(updates) == 6:
                raise InterruptedError("cancelled")

    monkeypatch.setattr(host, "Progress", Counting)
    with pytest.raises(InterruptedError):
        nodes.FideDiffDeblur().deblur(handle, torch.rand(2, 24, 24, 3))
    assert len(updates) == 6  # four stages per image, stopped in the second image
    assert handle.model.unet.conv_in.weight.device == host.offload_device()


def test_out_of_memory_retries_in_smaller_tiles(handle, monkeypatch):
    calls = []
    real = nodes.deblur

    def flaky(model, images, options, *args):
        calls.append((options.latent_tile, options.vae_tile))
        if len(calls) < 3:
            raise torch.OutOfMemoryError("out of memory")
        return real(model, images, options, *args)

    monkeypatch.setattr(nodes, "deblur", flaky)
    (out,) = nodes.FideDiffDeblur().deblur(handle, torch.rand(1, 24, 24, 3))
    assert calls == [(128, 1024), (64, 512), (32, 256)] and out.shape == (1, 24, 24, 3)


def test_stages_match_the_one_node_and_take_kernels(handle):
    image = torch.rand(1, 27, 33, 3, generator=torch.Generator().manual_seed(1))
    (latent,) = nodes.FideDiffEncode().encode(handle, image)
    assert latent["samples"].shape == (1, 4, 8, 10) and latent["fidediff_size"] == [27, 33] and latent["fidediff_d"] == 4
    (clean,) = nodes.KernelControlNetStep().step(handle, latent, timestep=-1.0)
    (decoded,) = nodes.FideDiffDecode().decode(handle, clean)
    (whole,) = nodes.FideDiffDeblur().deblur(handle, image, timestep=200.0, use_kernels=False)
    torch.testing.assert_close(decoded, whole, rtol=1e-4, atol=1e-4)
    # with the estimator's kernels and level, through Blur Kernel Estimate, as the one node does it
    estimate = pack_module("nodes.fidediff_estimate").BlurKernelEstimate()
    result = estimate.estimate(image, "FideDiff/tiny_d4.safetensors")
    kernels = result["result"][0] if isinstance(result, dict) else result[0]
    (estimated,) = nodes.KernelControlNetStep().step(handle, latent, timestep=-1.0, blur_kernel=kernels)
    (by_stages,) = nodes.FideDiffDecode().decode(handle, estimated)
    level = kernels["level"][0]  # rounded to 0.1 by Blur Kernel Estimate
    (one_node,) = nodes.FideDiffDeblur().deblur(handle, image, timestep=level)
    torch.testing.assert_close(by_stages, one_node, rtol=1e-4, atol=1e-4)
    centre = torch.zeros(1, 9, 9)
    centre[0, 4, 2:7] = 0.2  # a horizontal 5-pixel streak, 9x9 support: fitted to the adapter's 5x5
    value = blur_kernel.make_blur_kernel(centre, level=[260.0])
    (steered,) = nodes.KernelControlNetStep().step(handle, latent, timestep=-1.0, blur_kernel=value)
    (at_level,) = nodes.KernelControlNetStep().step(handle, latent, timestep=260.0)
    assert (steered["samples"] - clean["samples"]).abs().max() > 1e-4
    assert (steered["samples"] - at_level["samples"]).abs().max() > 0  # same timestep, the kernels differ
    with pytest.raises(ValueError, match="LATENT"):
        nodes.KernelControlNetStep().step(handle, {"samples": torch.zeros(1, 3, 4, 4)})
    two = blur_kernel.make_blur_kernel(torch.stack([centre[0], centre[0]]))
    with pytest.raises(ValueError, match="batch"):
        nodes.KernelControlNetStep().step(handle, {**latent, "samples": latent["samples"].repeat(3, 1, 1, 1)}, blur_kernel=two)


def test_kernel_input_from_a_grid(handle):
    kernels = torch.softmax(torch.randn(2, 3, 4, 7 * 7), -1).reshape(2, 3, 4, 7, 7)
    k_in, levels = nodes.blur_kernel_input(blur_kernel.make_blur_kernel(kernels), KERNEL_SIZE, (27, 33), (8, 10), 4, 2)
    assert k_in.shape == (2, KERNEL_SIZE ** 2, 8, 10) and levels == [None, None]
    torch.testing.assert_close(k_in.sum(1), torch.ones(2, 8, 10))


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_is_close_to_fp32(handle, precision):
    (half,) = nodes.FideDiffLoader().load(BASE, "FideDiff/tiny_d4.safetensors", precision)
    assert half.dtype == host.PRECISIONS[precision] and half.model.unet.conv_in.weight.dtype == half.dtype
    image = torch.rand(1, 24, 20, 3, generator=torch.Generator().manual_seed(2))
    (reference,) = nodes.FideDiffDeblur().deblur(handle, image, timestep=150.0)
    (out,) = nodes.FideDiffDeblur().deblur(half, image, timestep=150.0)
    assert out.dtype == torch.float32 and (out - reference).abs().mean() < 0.02


def test_deblur_and_decode_honour_mask_and_strength(handle):
    from blend_checks import check_node_blends

    image = torch.rand(1, 24, 28, 3, generator=torch.Generator().manual_seed(2))
    check_node_blends(lambda **kw: nodes.FideDiffDeblur().deblur(handle, image, **kw)[0], image)
    (latent,) = nodes.FideDiffEncode().encode(handle, image)
    (clean,) = nodes.KernelControlNetStep().step(handle, latent, timestep=100.0)
    check_node_blends(lambda **kw: nodes.FideDiffDecode().decode(handle, clean, image=image, **kw)[0], image)
    rgba = torch.cat([image, torch.rand(1, 24, 28, 1)], -1)  # the image input gives the decoded image its alpha
    (out,) = nodes.FideDiffDecode().decode(handle, clean, image=rgba, strength=0.5)
    assert out.shape == rgba.shape and torch.equal(out[..., 3], rgba[..., 3])
    with pytest.raises(ValueError, match="'image'"):
        nodes.FideDiffDecode().decode(handle, clean, mask=torch.ones(24, 28))
    with pytest.raises(ValueError, match="not the encoded image"):
        nodes.FideDiffDecode().decode(handle, clean, image=image[:, :20])
