"""DeblurDiff nodes with a tiny model: loading, the one-node sampler (alpha, grey, progress,
interruption, out-of-memory fallback), and the stages Encode → LKPN Step → Decode."""
import pytest
import torch

from conftest import pack_module
from tiny_deblurdiff import single_thread, micro_state, write_model  # noqa: F401  (single_thread: autouse fixture)

nodes = pack_module("nodes.deblurdiff")
host = pack_module("nodes.host")
dd = pack_module("models.deblurdiff")


@pytest.fixture(scope="module")
def micro_file(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("models") / "DeblurDiff" / "model.pth", micro_state(0))


@pytest.fixture
def handle(micro_file, models_dir):
    (models_dir / "DeblurDiff").mkdir()
    (models_dir / "DeblurDiff" / "model.pth").symlink_to(micro_file)
    assert nodes.list_models() == ["DeblurDiff/model.pth"]
    (loaded,) = nodes.DeblurDiffLoader().load("DeblurDiff/model.pth", "auto")
    return loaded


def _sample(handle, image, steps=2, **kw):
    args = dict(positive="", negative=dd.DEFAULT_NEGATIVE, steps=steps, cfg=1.0, control_strength=1.0, seed=3, better_start=False)
    args.update(kw)
    return nodes.DeblurDiffSampler().sample(handle, image, **args)[0]


def test_loader_reports_a_missing_model(models_dir):
    assert nodes.list_models() == [nodes.NO_MODEL]
    with pytest.raises(FileNotFoundError, match="models/deblur/DeblurDiff"):
        nodes.DeblurDiffLoader().load(nodes.NO_MODEL)


def test_auto_precision_is_fp32_on_cpu(handle):
    assert handle.dtype == torch.float32 and host.choose_dtype("auto", "DeblurDiff", torch.device("cpu")) == torch.float32 and pack_module("models.common.runtime").half_on_gpus(torch.device("cuda")) == torch.float16


def test_sampler_keeps_alpha_and_grey(handle):
    rgba = torch.rand(1, 30, 21, 4, generator=torch.Generator().manual_seed(0))
    out = _sample(handle, rgba)
    assert out.shape == rgba.shape and torch.equal(out[..., 3], rgba[..., 3]) and 0 <= out.min() and out.max() <= 1
    grey = _sample(handle, rgba[..., :1])
    assert grey.shape == (1, 30, 21, 1)
    assert torch.equal(_sample(handle, rgba), out)  # seeded


def test_progress_counts_steps_and_interruption_stops_between_steps(handle, monkeypatch):
    updates = []

    class Counting(host.Progress):
        def update(self, n=1):
            updates.append(n)
            if interrupt and len(updates) == 3:
                raise InterruptedError("cancelled")

    monkeypatch.setattr(host, "Progress", Counting)
    interrupt = False
    image = torch.rand(2, 16, 16, 3)
    _sample(handle, image, steps=3)
    assert len(updates) == 2 * (3 + 2)  # per image: encode, 3 steps, decode
    updates.clear()
    interrupt = True
    with pytest.raises(InterruptedError):
        _sample(handle, image, steps=3)
    assert len(updates) == 3


def test_out_of_memory_retries_in_tiles(handle, monkeypatch):
    calls = []
    real = nodes.deblur

    def flaky(model, images, options, *args, **kwargs):
        calls.append((options.tiled, options.tile_size))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("out of memory")
        return real(model, images, options, *args, **kwargs)

    monkeypatch.setattr(nodes, "deblur", flaky)
    out = _sample(handle, torch.rand(1, 24, 24, 3))
    assert calls == [(False, 512), (True, 512)] and out.shape == (1, 24, 24, 3)


def test_stages_encode_lkpn_decode(handle):
    image = torch.rand(1, 37, 45, 3, generator=torch.Generator().manual_seed(1))
    condition, start = nodes.DeblurDiffEncode().encode(handle, image, 7, False)
    assert condition["samples"].shape == start["samples"].shape == (1, 4, 8, 8)
    assert condition[nodes.SIZE_KEY] == [37, 45]
    out = nodes.LKPNStep().step(handle, condition, start, 999, "a photo")
    refined, kernels, preview = out["result"]
    assert pack_module("nodes.kernel_ui").UI_KEY in out["ui"]  # the kernels for the frontend to draw
    assert refined["samples"].shape == (1, 4, 8, 8) and refined[nodes.SIZE_KEY] == [37, 45]
    assert kernels["kernels"].shape == (1, 8, 8, 5, 5) and kernels["lkpn"]["weights"].shape == (1, 100, 8, 8)
    assert torch.allclose(kernels["kernels"].sum((-2, -1)), torch.ones(1, 8, 8)) and (kernels["kernels"] >= 0).all()
    blur_kernel = pytest.importorskip(f"{nodes.__package__.rsplit('.', 1)[0]}.models.blur.blur_kernel")
    blur_kernel.check_blur_kernel(kernels)  # a valid BLUR_KERNEL for the blur lab nodes
    assert preview.shape == (1, 37, 45, 3)
    (decoded,) = nodes.DeblurDiffDecode().decode(handle, refined, reference=image)
    assert decoded.shape == image.shape
    (raw,) = nodes.DeblurDiffDecode().decode(handle, refined)
    assert raw.shape == image.shape  # cropped to the encoded image's size


def test_lkpn_kernels_are_the_ones_eac_applies(handle):
    model = handle.model
    g = torch.Generator().manual_seed(2)
    cond, x = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    with torch.no_grad():
        refined, kernels = model.refine(x, torch.tensor([500]), cond, model.encode_text(""))
    assert torch.allclose(refined, dd.eac_reference(cond, kernels) + cond, atol=1e-5)
    maps = pack_module("models.deblurdiff.kernels").effective_kernels(kernels)
    direct = torch.einsum("bchwij->bchw", maps * torch.nn.functional.pad(cond, (2, 2, 2, 2)).unfold(2, 5, 1).unfold(3, 5, 1))
    assert torch.allclose(direct, refined, atol=1e-5)


def test_bad_latents_are_reported(handle):
    with pytest.raises(ValueError, match="condition: expected a LATENT with 4 channels"):
        nodes.LKPNStep().step(handle, {"samples": torch.zeros(1, 3, 8, 8)}, {"samples": torch.zeros(1, 4, 8, 8)}, 10)
    with pytest.raises(ValueError, match="differ in size"):
        nodes.LKPNStep().step(handle, {"samples": torch.zeros(1, 4, 8, 8)}, {"samples": torch.zeros(1, 4, 6, 8)}, 10)
    with pytest.raises(ValueError, match="tile"):
        _sample(handle, torch.rand(1, 16, 16, 3), tiled=True, tile_size=512, tile_stride=600)


def test_sampler_and_decode_honour_mask_and_strength(handle):
    from blend_checks import check_node_blends

    image = torch.rand(1, 24, 24, 3, generator=torch.Generator().manual_seed(2))
    check_node_blends(lambda **kw: _sample(handle, image, steps=1, **kw), image)
    condition, start = nodes.DeblurDiffEncode().encode(handle, image, 7, False)
    check_node_blends(lambda **kw: nodes.DeblurDiffDecode().decode(handle, condition, reference=image, **kw)[0], image)
    with pytest.raises(ValueError, match="reference"):  # nothing to blend into
        nodes.DeblurDiffDecode().decode(handle, condition, strength=0.5)
