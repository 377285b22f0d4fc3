"""The HI-Diff nodes through their classic-API classes, as ComfyUI calls them."""
import os

import pytest
import torch

from conftest import DATA, pack_module

nodes = pack_module("nodes.hidiff")
pack_nodes = pack_module("nodes")
tiling = pack_module("models.common.tiling")


@pytest.fixture
def model(models_dir):
    os.symlink(os.path.join(DATA, "hidiff_tiny"), models_dir / "HI_Diff_GoPro")
    return nodes.HIDiffLoader().load("HI_Diff_GoPro", "fp32")[0]


def _image(b, h, w, c=3, seed=0):
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


def test_classic_node_api():
    for name, cls in pack_nodes.NODE_CLASS_MAPPINGS.items():
        inputs = cls.INPUT_TYPES()
        assert set(inputs) <= {"required", "optional", "hidden"}
        assert isinstance(cls.RETURN_TYPES, tuple) and callable(getattr(cls(), cls.FUNCTION))
        assert cls.CATEGORY.startswith("deblur/") and cls.DESCRIPTION
        assert pack_nodes.NODE_DISPLAY_NAME_MAPPINGS[name]


def test_loader_lists_models_and_explains_when_there_is_none(models_dir, monkeypatch):
    monkeypatch.setattr(pack_module("models.hidiff.default_model"), "default_available", lambda: False)  # as if removed
    choices = nodes.HIDiffLoader.INPUT_TYPES()["required"]["model_name"][0]
    assert choices == [nodes.NO_MODEL]
    with pytest.raises(FileNotFoundError, match="net_g.pth"):
        nodes.HIDiffLoader().load(nodes.NO_MODEL)
    os.symlink(os.path.join(DATA, "hidiff_tiny"), models_dir / "HI_Diff_GoPro")
    assert nodes.HIDiffLoader.INPUT_TYPES()["required"]["model_name"][0] == ["HI_Diff_GoPro"]


@pytest.mark.parametrize("shape", [(1, 37, 45), (3, 16, 21), (1, 9, 70), (1, 5, 6)])
def test_any_size_and_batch(model, shape):
    image = _image(*shape)
    (out,) = nodes.HIDiffDeblur().deblur(model, image, 7)
    assert out.shape == image.shape and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()


def test_batch_equals_images_one_by_one_with_batch_noise(model):
    image = _image(2, 24, 32)
    (batch,) = nodes.HIDiffDeblur().deblur(model, image, 7)
    hidiff = pack_module("models.hidiff")
    noise = model.model.initial_noise(2, 7)
    second = hidiff.pipeline.deblur_one(model.model, image[1:].permute(0, 3, 1, 2), noise[1:])
    assert torch.allclose(batch[1], second[0].clamp(0, 1).permute(1, 2, 0), atol=1e-6)


def test_alpha_passes_through_and_grey_stays_grey(model):
    rgba = _image(1, 20, 24, 4)
    (out,) = nodes.HIDiffDeblur().deblur(model, rgba, 1)
    assert out.shape == rgba.shape and torch.equal(out[..., 3], rgba[..., 3])
    (rgb_out,) = nodes.HIDiffDeblur().deblur(model, rgba[..., :3].contiguous(), 1)
    assert torch.equal(out[..., :3], rgb_out)
    grey = _image(1, 20, 24, 1)
    (grey_out,) = nodes.HIDiffDeblur().deblur(model, grey, 1)
    assert grey_out.shape == grey.shape


def test_seed_controls_the_prior(model):
    image = _image(1, 24, 24)
    a, b, c = (nodes.HIDiffDeblur().deblur(model, image, s)[0] for s in (1, 1, 2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_prior_then_restore_equals_one_node(model):
    image = _image(2, 21, 30)
    (prior,) = nodes.HIDiffPrior().prior(model, image, 5)
    assert prior.shape == (2, *model.model.prior_shape)
    (restored,) = nodes.HIDiffRestore().restore(model, image, prior)
    (direct,) = nodes.HIDiffDeblur().deblur(model, image, 5)
    assert torch.equal(restored, direct)
    (single,) = nodes.HIDiffRestore().restore(model, image, prior[:1])  # one prior for the whole batch
    assert torch.equal(single[0], restored[0])


@pytest.mark.parametrize("bad,words", [
    (torch.full((1, 8, 8, 3), float("nan")), "NaN"),
    (torch.rand(8, 8, 3), "IMAGE tensor"),
    (torch.rand(1, 8, 8, 2), "channels"),
    (torch.rand(0, 8, 8, 3), "empty"),
])
def test_bad_images_get_clear_errors(model, bad, words):
    with pytest.raises(ValueError, match=words):
        nodes.HIDiffDeblur().deblur(model, bad, 0)


def test_bad_prior_and_tile_settings(model):
    image = _image(2, 16, 16)
    with pytest.raises(ValueError, match="prior"):
        nodes.HIDiffRestore().restore(model, image, torch.zeros(2, 16, 99))
    with pytest.raises(ValueError, match="batch of 3"):
        nodes.HIDiffRestore().restore(model, image, torch.zeros(3, *model.model.prior_shape))
    with pytest.raises(ValueError, match="tile_overlap"):
        nodes.HIDiffDeblur().deblur(model, image, 0, tile_size=16, tile_overlap=16)


def test_tiled_deblur(model, monkeypatch):
    image = _image(1, 40, 56)
    (whole,) = nodes.HIDiffDeblur().deblur(model, image, 3)
    (same,) = nodes.HIDiffDeblur().deblur(model, image, 3, tile_size=64, tile_overlap=16)
    assert torch.equal(whole, same)  # a tile larger than the image is the untiled path

    seen = []
    pipeline = pack_module("models.hidiff.pipeline")
    original = pipeline.tiled_apply
    monkeypatch.setattr(pipeline, "tiled_apply",
                        lambda img, fn, *a, **k: original(img, lambda t: seen.append(t.shape) or fn(t), *a, **k))
    (tiled,) = nodes.HIDiffDeblur().deblur(model, image, 3, tile_size=24, tile_overlap=8)
    assert seen and all(s[-2] <= 24 and s[-1] <= 24 for s in seen)
    assert tiled.shape == image.shape and torch.isfinite(tiled).all()
    (again,) = nodes.HIDiffDeblur().deblur(model, image, 3, tile_size=24, tile_overlap=8)
    assert torch.equal(tiled, again)  # per-tile noise comes from the seed, in tile order


def test_tiled_apply_blends_without_seams():
    image = torch.rand(2, 3, 50, 77)
    out = tiling.tiled_apply(image, lambda t: t * 2 + 1, tile=16, overlap=6)
    assert torch.allclose(out, image * 2 + 1, atol=1e-6)
    assert tiling.tile_starts(50, 16, 6) == [0, 10, 20, 30, 34]
    with pytest.raises(ValueError):
        tiling.tiled_apply(image, lambda t: t, tile=8, overlap=8)


def test_deblur_and_restore_honour_mask_and_strength(model):
    from blend_checks import check_node_blends

    image = _image(2, 20, 24)
    check_node_blends(lambda **kw: nodes.HIDiffDeblur().deblur(model, image, 7, **kw)[0], image)
    (prior,) = nodes.HIDiffPrior().prior(model, image, 7)
    check_node_blends(lambda **kw: nodes.HIDiffRestore().restore(model, image, prior, **kw)[0], image)
    rgba = _image(1, 20, 24, 4)
    out = nodes.HIDiffDeblur().deblur(model, rgba, 7, mask=torch.rand(20, 24), strength=0.7, feather=2)[0]
    assert torch.equal(out[..., 3], rgba[..., 3])
