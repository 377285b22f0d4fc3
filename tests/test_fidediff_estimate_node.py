"""Blur Kernel Estimate as ComfyUI calls it: the model list (bundled first, then estimator or adapter
files), the BLUR_KERNEL it returns, the level and its map, tiling with progress, and the shipped file."""
import os

import pytest
import torch

from conftest import pack_module

nodes = pack_module("nodes.fidediff_estimate")
em = pack_module("models.fidediff.estimator_model")
est = pack_module("models.fidediff.estimator")
training = pack_module("models.fidediff.estimator_training")
blur_kernel = pack_module("models.blur.blur_kernel")
checkpoint = pack_module("models.common.checkpoint")


def tiny_file(path, kernel_size=7):
    torch.manual_seed(0)
    model = training.build_estimator(est.EstimatorConfig(kernel_size=kernel_size, basis=2, widths=(8, 12)),
                                     est.RegressorConfig(kernel_size=kernel_size, width=8, layers=1))
    em.save_blur_estimator(model, str(path))
    return model


def test_lists_the_bundled_estimator_first_then_files_that_hold_one(models_dir):
    assert nodes.list_estimators() == [em.DEFAULT_NAME]
    (models_dir / "FideDiff").mkdir()
    tiny_file(models_dir / "FideDiff" / "adapter.safetensors")
    (models_dir / "FideDiff" / "other.safetensors").write_bytes(b"not a model")
    assert nodes.list_estimators() == [em.DEFAULT_NAME, "FideDiff/adapter.safetensors"]


def test_no_estimator_is_explained(models_dir, monkeypatch):
    monkeypatch.setattr(nodes, "default_available", lambda: False)
    assert nodes.list_estimators() == [nodes.NO_MODEL]
    with pytest.raises(FileNotFoundError, match="bundled"):
        nodes.BlurKernelEstimate().estimate(torch.rand(1, 32, 32, 3), nodes.NO_MODEL)


def test_estimate_returns_kernels_level_and_map(models_dir):
    tiny_file(models_dir / "tiny.safetensors")
    image = torch.rand(2, 37, 50, 4)  # RGBA, odd size
    out = nodes.BlurKernelEstimate().estimate(image, "tiny.safetensors", tile_size=64)
    value, level, level_map, report, level_mask = out["result"]
    blur_kernel.check_blur_kernel(value)  # non-negative, each sums to one
    assert value["kernels"].shape == (2, 5, 7, 7, 7)  # one kernel per 8x8 pixels
    assert len(value["level"]) == 2 and all(0 <= t <= 400 for t in value["level"])
    assert level == pytest.approx(sum(value["level"]) / 2, abs=0.1)
    assert level_map.shape[0] == 2 and level_map.shape[2] == 50 and level_map.shape[1] > 37 and level_map.shape[3] == 3
    assert level_mask.shape == (2, 37, 50) and level_mask.dtype == torch.float32
    assert 0 <= level_mask.min() and level_mask.max() <= 1
    for i in range(2):  # the mask is the level map over 400: its mean is near the image's level
        assert float(level_mask[i].mean()) * 400 == pytest.approx(value["level"][i], rel=0.2, abs=2)
    assert report.count("blur level") == 2
    assert out["ui"]["deblur_kernels"][0]["grid"] == [5, 7]


def test_large_images_go_tile_by_tile_with_progress(models_dir, monkeypatch):
    tiny_file(models_dir / "tiny.safetensors")
    steps = []
    real = nodes.host.Progress

    class Counting(real):
        def update(self, n=1):
            steps.append(n)
            super().update(n)

    monkeypatch.setattr(nodes.host, "Progress", Counting)
    out = nodes.BlurKernelEstimate().estimate(torch.rand(1, 150, 200, 3), "tiny.safetensors", tile_size=64)
    assert len(steps) == em.tile_count(150, 200, 64, em.OVERLAP) > 1
    assert out["result"][0]["kernels"].shape[1:3] == (19, 25)


def test_the_shipped_estimator_is_small_loads_and_is_documented():
    assert os.path.getsize(em.DEFAULT_PATH) <= 10 * 1024 * 1024
    model = em.load_blur_estimator(em.DEFAULT_PATH)
    assert model.kernel_size == est.KERNEL_SIZE
    metadata = checkpoint.read_metadata(em.DEFAULT_PATH)
    assert metadata["method"] == em.METHOD and "iteration" in metadata["training"]
    assert os.path.isfile(os.path.join(em.DEFAULT_DIR, "MODEL_CARD.md"))
    # a sharp flat image gets a low level, a strongly blurred one a higher level
    generator = torch.Generator().manual_seed(0)
    sharp = pack_module("models.blur").dead_leaves(96, generator)[None]
    kernel = pack_module("models.blur").linear_kernel(19, 17, 30)[0]
    blurred = pack_module("models.blur").convolve(sharp, kernel)
    assert model.estimate(blurred).level > model.estimate(sharp).level
