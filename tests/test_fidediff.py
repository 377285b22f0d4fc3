"""FideDiff: the Kernel ControlNet's zero-init identity, d = 4 / 8 on odd sizes, the adapter file
(loading, base mismatch, bad files), kernel maps at latent size."""
import pytest
import torch

from conftest import pack_module
from tiny_deblurdiff import single_thread  # noqa: F401  (autouse fixture)
from tiny_fidediff import KERNEL_SIZE, write_adapter
from tiny_sd import write_single_file

sd21 = pack_module("models.sd21")
fd = pack_module("models.fidediff")
pipeline = pack_module("models.fidediff.pipeline")
CheckpointError = pack_module("models.common.checkpoint").CheckpointError


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fidediff")
    base = write_single_file(root / "checkpoints" / "sd21.safetensors")
    other = write_single_file(root / "checkpoints" / "other.safetensors", seed=5)
    return {"base": base, "other": other, "root": root,
            "d4": write_adapter(root / "FideDiff" / "tiny_d4.safetensors", base, 4),
            "d8": write_adapter(root / "FideDiff" / "tiny_d8.safetensors", base, 8, with_kcn=False, with_estimator=False)}


def test_zero_initialised_kcn_leaves_the_unet_exactly_unchanged(files):
    base = sd21.load_base(files["base"])
    kcn = fd.KernelControlNet.from_unet(base.unet, base.unet_config, KERNEL_SIZE ** 2)
    g = torch.Generator().manual_seed(0)
    z, kernels = torch.randn(2, 4, 8, 8, generator=g), torch.rand(2, KERNEL_SIZE ** 2, 8, 8, generator=g)
    context, t = torch.randn(1, 77, 32, generator=g), torch.tensor([150.0, 260.5])
    schedule = sd21.OneStepSchedule()
    with torch.no_grad():
        plain = sd21.one_step(base.unet, schedule, z, t, context)
        down, mid = kcn(z, kernels, t, context)
        assert all(torch.count_nonzero(r) == 0 for r in down + [mid])
        controlled = sd21.one_step(base.unet, schedule, z, t, context, (down, mid))
        assert torch.equal(controlled, plain)
        assert torch.equal(kcn.conv_in.weight, base.unet.conv_in.weight)
        kcn.filter_out.weight.normal_(std=0.1)
        kcn.controlnet_down_blocks[0].weight.normal_(std=0.1)
        other = kcn(z, kernels, t, context)
        other_kernels = kcn(z, torch.rand(2, KERNEL_SIZE ** 2, 8, 8, generator=g), t, context)
        assert not torch.equal(other[0][0], other_kernels[0][0])  # the kernels steer the residuals
        with pytest.raises(ValueError, match="kernel map"):
            kcn(z, kernels[:, :9], t, context)


@pytest.mark.parametrize("name,d", [("d4", 4), ("d8", 8)])
def test_any_size_in_and_out(files, name, d):
    model = fd.load_fidediff(files["base"], files[name])
    assert model.latent_downsample == d and (model.kcn is None) == (name == "d8")
    image = torch.rand(1, 3, 37, 29)
    m = model.pad_multiple()
    assert m == {4: 8, 8: 16}[d]  # tiny UNet: 2 levels (stride 2) on the x8 autoencoder; d = 4 sees the image x2
    latent = model.encode(pack_module("models.common.padding").pad_to_multiple(image, m)[0])
    assert latent.shape[-2:] == ((37 + m - 1) // m * m // d, (29 + m - 1) // m * m // d)
    out, info = pipeline.deblur(model, torch.cat([image, image.flip(-1)]))
    assert out.shape == (2, 3, 37, 29) and 0 <= out.min() and out.max() <= 1
    # the adapter's estimator (d4) or, without one, the pack's bundled estimator (d8) gives the level per image
    assert model.estimator is not None or not pack_module("models.fidediff.estimator_model").default_available()
    if model.estimator is not None:
        assert info["timestep"] == pytest.approx(info["level"]) and all(0 <= t <= 400 for t in info["timestep"])
    model.estimator = None  # no estimator at all: the paper's best constant
    _, info = pipeline.deblur(model, image)
    assert info["timestep"] == [fd.DEFAULT_TIMESTEP] and info["level"] == [None]
    override, info = pipeline.deblur(model, image, pipeline.DeblurOptions(timestep=80.0, latent_downsample=8))
    assert override.shape == image.shape and info["timestep"] == [80.0]


def test_kcn_changes_the_step_and_tiles_match_whole(files):
    model = fd.load_fidediff(files["base"], files["d4"])
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, 4, 24, 24, generator=g)
    kmap = torch.softmax(torch.randn(1, KERNEL_SIZE ** 2, 24, 24, generator=g), 1)
    with torch.no_grad():
        without, with_kernels = model.step(z, 200.0), model.step(z, 200.0, kmap)
        tiled = model.step(z, 200.0, kmap, tile=16)
    assert (without - with_kernels).abs().max() > 1e-4
    assert tiled.shape == with_kernels.shape and torch.isfinite(tiled).all()


def test_adapter_on_another_base_is_refused_with_both_names(files):
    with pytest.raises(CheckpointError, match=r"tiny_d4.safetensors.*sd21.safetensors.*other.safetensors"):
        fd.load_fidediff(files["other"], files["d4"])
    model = fd.load_fidediff(files["other"], files["d4"], check_base=False)
    assert model.fingerprint != model.metadata["base_fingerprint"]


def test_bad_adapter_files(files, tmp_path):
    with pytest.raises(CheckpointError, match="not a FideDiff adapter"):
        fd.load_fidediff(files["base"], files["base"])
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        fd.load_fidediff(files["base"], str(broken))
    state, metadata = fd.read_adapter(files["d4"])
    from safetensors.torch import save_file
    bad = tmp_path / "bad_d.safetensors"
    save_file(state, str(bad), metadata=metadata | {"latent_downsample": "6"})
    with pytest.raises(CheckpointError, match="latent_downsample"):
        fd.read_adapter(str(bad))
    wrong = tmp_path / "wrong_text.safetensors"
    save_file(state | {"text_embedding": torch.zeros(1, 77, 48)}, str(wrong), metadata=metadata)
    with pytest.raises(CheckpointError, match="text_embedding"):
        fd.load_fidediff(files["base"], str(wrong))
    assert fd.find_adapters(str(files["root"])) == ["FideDiff/tiny_d4.safetensors", "FideDiff/tiny_d8.safetensors"]


def test_kernel_maps_at_latent_size_stay_normalised():
    g = torch.Generator().manual_seed(0)
    kmap = torch.softmax(torch.randn(2, 9, 5, 7, generator=g), 1)  # stride-8 grid of a 40x56 image
    for latent, d in (((10, 14), 4), ((6, 8), 8)):
        k_in = fd.kernel_input(kmap, (40, 56), latent, d)
        assert k_in.shape == (2, 9, *latent)
        torch.testing.assert_close(k_in.sum(1), torch.ones(2, *latent))
    kernels = torch.softmax(torch.randn(3, 31 * 31, generator=g), 1).reshape(3, 31, 31)
    fitted = fd.fit_kernel_size(kernels, 19)
    assert fitted.shape == (3, 19, 19)
    torch.testing.assert_close(fitted.sum((-2, -1)), torch.ones(3))
    grown = fd.fit_kernel_size(fitted, 25)
    assert grown.shape == (3, 25, 25) and grown[:, :3].sum() == 0
    torch.testing.assert_close(grown[:, 3:22, 3:22], fitted)
