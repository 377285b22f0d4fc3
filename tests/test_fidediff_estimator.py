"""FideDiff's kernel estimator M and blur-level regressor T: the kernels are physical, reblurring agrees
with the blur lab, tiling keeps memory bounded without changing the result, training lowers both losses
and resumes exactly, files load with sizes from shapes and bad ones are named."""
import importlib.util
import os
import sys

import pytest
import torch

from conftest import ROOT, pack_module

blur = pack_module("models.blur")
convolve = pack_module("models.blur.convolve")
est = pack_module("models.fidediff.estimator")
em = pack_module("models.fidediff.estimator_model")
training = pack_module("models.fidediff.estimator_training")
datasets = pack_module("models.blur.datasets")
image_io = pack_module("models.common.image_io")
CheckpointError = pack_module("models.common.checkpoint").CheckpointError
sys.path.insert(0, os.path.join(ROOT, "tools"))
# the trainers run on accelerate (the `train` extra, which .ci/run installs)
needs_accelerate = pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="training needs accelerate")


def tiny_model(seed=0, kernel_size=7, basis=3):
    torch.manual_seed(seed)
    return training.build_estimator(est.EstimatorConfig(kernel_size=kernel_size, basis=basis, widths=(8, 12, 16)),
                                    est.RegressorConfig(kernel_size=kernel_size, width=8, layers=1)).eval()


def test_kernels_are_non_negative_and_sum_to_one():
    model = tiny_model()
    estimate = model.estimator(torch.rand(2, 3, 21, 30))  # odd size: padded inside, cropped back
    kernels = estimate.per_pixel()
    assert kernels.shape == (2, 49, 21, 30) and estimate.basis.shape == (2, 3, 7, 7)
    assert (kernels >= 0).all() and torch.allclose(kernels.sum(1), torch.ones(2, 21, 30), atol=1e-5)
    pooled = estimate.kernel_map((3, 4))
    assert pooled.shape == (2, 49, 3, 4) and torch.allclose(pooled.sum(1), torch.ones(2, 3, 4), atol=1e-5)
    # pooling the per-pixel kernels is what the KCN gets: the average of the pixels of each cell
    full = est.KernelEstimate(estimate.basis, estimate.weights[..., :21, :28]).per_pixel()
    cell = full[:, :, 7:14, 7:14].mean((-2, -1))
    assert torch.allclose(est.KernelEstimate(estimate.basis, estimate.weights[..., :21, :28]).kernel_map((3, 4))[:, :, 1, 1], cell, atol=1e-6)


def one_hot_estimate(kernel, batch, height, width, basis=2):
    """An estimate whose every pixel uses ``kernel`` (the other basis kernels get zero weight)."""
    k = kernel.shape[-1]
    kernels = torch.rand(batch, basis, k, k)
    kernels = kernels / kernels.sum((-2, -1), keepdim=True)
    kernels[:, 0] = kernel
    weights = torch.zeros(batch, basis, height, width)
    weights[:, 0] = 1
    return est.KernelEstimate(kernels, weights)


def test_reblur_with_the_identity_kernel_is_the_identity():
    sharp = torch.rand(2, 3, 17, 23)
    identity = torch.zeros(9, 9)
    identity[4, 4] = 1
    assert torch.allclose(one_hot_estimate(identity, 2, 17, 23).reblur(sharp), sharp, atol=1e-6)


def test_reblur_equals_the_blur_lab_for_a_constant_kernel():
    sharp = torch.rand(1, 3, 30, 26)
    kernel, _ = blur.camera_shake_kernel(19, 0.8, torch.Generator().manual_seed(3))
    expected = blur.convolve(sharp, kernel)
    assert torch.allclose(one_hot_estimate(kernel, 1, 30, 26).reblur(sharp), expected, atol=1e-5)
    # the per-pixel route of the blur lab (the full kernel map) agrees too
    per_pixel = one_hot_estimate(kernel, 1, 30, 26).per_pixel()
    assert torch.allclose(convolve.per_pixel_filter(sharp, per_pixel, 19), expected, atol=1e-5)
    # with a margin: the margin supplies the borders (the training form)
    big = torch.rand(1, 3, 30 + 18, 26 + 18)
    valid = one_hot_estimate(kernel, 1, 30, 26).reblur(big)
    assert torch.allclose(valid, blur.convolve(big, kernel)[..., 9:-9, 9:-9], atol=1e-5)


def test_blended_convolutions_match_per_pixel_kernels():
    sharp = torch.rand(1, 3, 12, 14)
    estimate = tiny_model().estimator(torch.rand(1, 3, 12, 14))
    assert torch.allclose(estimate.reblur(sharp, "zeros"), convolve.per_pixel_filter(sharp, estimate.per_pixel(), 7, "zeros"), atol=1e-5)


def test_tiled_estimation_matches_the_whole_image_and_bounds_the_tile():
    model = tiny_model()
    image = torch.rand(1, 3, 60, 75)
    whole = model.estimate(image, tile=1024)
    seen = []
    original = model.estimator.forward
    model.estimator.forward = lambda x: (seen.append(tuple(x.shape[-2:])), original(x))[1]
    tiled = model.estimate(image, tile=32, overlap=16)
    assert max(max(s) for s in seen) == 32 and len(seen) == em.tile_count(60, 75, 32, 16) > 1  # memory follows the tile
    assert tiled.kernel_map.shape == whole.kernel_map.shape == (1, 49, 8, 10)
    assert torch.allclose(tiled.kernel_map.sum(1), torch.ones(1, 8, 10), atol=1e-5)
    # each tile has its own basis, so the maps differ a little, but on uniform content they agree
    flat = torch.full((1, 3, 64, 80), 0.5)
    assert torch.allclose(model.estimate(flat, tile=32, overlap=16).kernel_map, model.estimate(flat, tile=1024).kernel_map, atol=1e-3)


def test_blur_lab_per_pixel_route_is_unchanged():
    """The blur lab's large-grid path goes through the shared per-pixel filter; compare with the small-grid route."""
    sharp = torch.rand(1, 3, 24, 24)
    grid = torch.rand(1, 2, 2, 5, 5)
    grid = grid / grid.sum((-2, -1), keepdim=True)
    blended = blur.blur(sharp, grid)
    per_pixel = convolve.per_pixel_filter(sharp, convolve.kernel_map(grid, 24, 24), 5)
    assert torch.allclose(blended, per_pixel, atol=1e-5)


def test_regressor_levels_are_in_range():
    model = tiny_model()
    out = model.estimate(torch.rand(2, 3, 40, 48))
    assert out.level.shape == (2,) and out.level_map.shape == (2, 1, 5, 6)
    assert ((out.level_map >= 0) & (out.level_map <= 400)).all()
    assert torch.allclose(out.level, out.level_map.mean((1, 2, 3)))


# -- data and training ----------------------------------------------------------------------------

def sharp_folder(path, count=3, size=64):
    path.mkdir()
    for i in range(count):
        image_io.save_png(blur.dead_leaves(size, torch.Generator().manual_seed(i)), str(path / f"{i}.png"))
    return str(path)


def small_data(**changes):
    values = dict(kernel_size=7, patch=16, batch=4, frames=(1, 7), speed=(0.5, 1.0), scale=(1.0, 1.0))
    values.update(changes)
    return training.DataConfig(**values)


def test_frame_averaging_samples_carry_their_level_and_kernel(tmp_path):
    sampler = training.EstimatorSampler(datasets.SharpFolder(sharp_folder(tmp_path / "s")), small_data(frame_share=1.0, noise=(0, 0)), 5)
    blurry, sharp, level, known, truth = sampler.next_batch()
    assert blurry.shape == (4, 3, 16, 16) and sharp.shape == (4, 3, 22, 22) and known.all()
    assert truth.shape == (4, 49, 2, 2)
    assert set(level.tolist()) <= {0.0, 40.0, 80.0, 120.0}
    for b, s, t, k in zip(blurry, sharp, level, truth):
        kernel = k[:, 0, 0].view(7, 7)
        assert int((kernel > 0).sum()) <= int(t) // 20 + 1
        # the true kernel reblurs the sharp frame into the blurry average exactly
        assert torch.allclose(blur.convolve(s[None], kernel)[0, :, 3:-3, 3:-3], b, atol=1e-5)
    for n, speed in ((7, 1.0), (5, 0.5)):
        offsets = sampler.frame_offsets(n, speed)
        # the middle frame is the sharp one; the farthest frame is (n - 1) / 2 * speed px away (to rounding)
        assert offsets.shape == (n, 2) and offsets[n // 2].abs().sum() == 0
        assert abs(float(offsets.float().norm(dim=1).max()) - (n - 1) / 2 * speed) <= 0.75


def test_camera_shake_samples_have_no_level_but_a_kernel(tmp_path):
    sampler = training.EstimatorSampler(datasets.SharpFolder(sharp_folder(tmp_path / "s")),
                                        small_data(frame_share=0.0, noise=(0, 0), varying_share=0.0), 5)
    blurry, sharp, level, known, truth = sampler.next_batch()
    assert not known.any() and torch.isnan(level).all()
    assert torch.allclose(truth.sum(1), torch.ones(4, 2, 2), atol=1e-5)
    for b, s, k in zip(blurry, sharp, truth):
        assert torch.allclose(blur.convolve(s[None], k[:, 0, 0].view(7, 7))[0, :, 3:-3, 3:-3], b, atol=1e-5)


def test_time_loss_ignores_unknown_levels():
    level_map = torch.full((3, 1, 2, 2), 100.0)
    assert training.time_loss(level_map, torch.tensor([120.0, float("nan"), 60.0]), torch.tensor([True, False, True])) == 30.0
    assert training.time_loss(level_map, torch.tensor([float("nan")] * 3), torch.zeros(3, dtype=torch.bool)) == 0


def make_trainer(tmp_path, iterations=(40, 10), lr=2e-3, seed=1):
    tmp_path.mkdir(exist_ok=True)
    if not (tmp_path / "sharp").exists():
        sharp_folder(tmp_path / "sharp")
    folder = datasets.SharpFolder(str(tmp_path / "sharp"))
    sampler = training.EstimatorSampler(folder, small_data(frame_share=0.7), seed)
    config = training.EstimatorTrainConfig(iterations=iterations, lr=lr, level_lr=5e-3, seed=seed, checkpoint_every=5, log_every=5)
    return training.EstimatorTrainer(tiny_model(seed), sampler, config, str(tmp_path / "run"))


@needs_accelerate
def test_training_lowers_both_losses(tmp_path):
    trainer = make_trainer(tmp_path)
    batch = trainer.sampler.next_batch()
    trainer.sampler.next_batch = lambda: batch  # one fixed batch: the losses must fall
    first = trainer.step()
    for _ in range(24):
        last = trainer.step()
    assert last["l_reblur"] < 0.7 * first["l_reblur"], (first, last)
    assert last["l_kernel"] < 0.9 * first["l_kernel"], (first, last)
    assert last["level_mae"] < 0.7 * first["level_mae"], (first, last)


@needs_accelerate
def test_stage_two_freezes_the_estimator(tmp_path):
    trainer = make_trainer(tmp_path, iterations=(2, 3))
    trainer.run(stop_after=2)
    frozen = {k: v.clone() for k, v in trainer.model.estimator.state_dict().items()}
    regressor = {k: v.clone() for k, v in trainer.model.regressor.state_dict().items()}
    trainer.run()
    assert trainer.done and trainer.stage == 2
    assert all(torch.equal(v, trainer.model.estimator.state_dict()[k]) for k, v in frozen.items())
    assert any(not torch.equal(v, trainer.model.regressor.state_dict()[k]) for k, v in regressor.items())


@needs_accelerate
def test_resume_continues_bit_identically(tmp_path):
    straight = make_trainer(tmp_path / "a", iterations=(8, 4))
    straight.run()
    interrupted = make_trainer(tmp_path / "b", iterations=(8, 4))
    interrupted.run(stop_after=5)  # checkpoint at 5
    resumed = make_trainer(tmp_path / "b", iterations=(8, 4))
    resumed.load()
    assert (resumed.stage, resumed.iteration) == (1, 5)
    resumed.run()
    for name in ("estimator", "regressor"):
        a, b = getattr(straight.model, name).state_dict(), getattr(resumed.model, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name


@needs_accelerate
def test_cli_trains_and_writes_a_loadable_file(tmp_path):
    import train_kernel_estimator

    sharp = sharp_folder(tmp_path / "sharp")
    output = tmp_path / "m.safetensors"
    assert train_kernel_estimator.main(["--sharp", sharp, "--run", str(tmp_path / "run"), "--output", str(output),
                                        "--iters", "3", "2", "--kernel-size", "7", "--basis", "2", "--widths", "8", "12",
                                        "--regressor-width", "8", "--batch", "2", "--patch", "16", "--threads", "1",
                                        "--frames", "1", "7", "--speed", "0.5", "1"]) == 0
    model = em.load_blur_estimator(str(output))
    assert model.kernel_size == 7 and model.estimator.config.widths == (8, 12) and model.estimator.config.basis == 2
    log = (tmp_path / "run" / "loss_log.csv").read_text().splitlines()
    assert log[0].startswith("stage,iteration") and log[-1].startswith("2,2,")
    # fine-tuning starts from the file's weights and sizes (not the command line's defaults)
    tuned = tmp_path / "tuned.safetensors"
    assert train_kernel_estimator.main(["--sharp", sharp, "--run", str(tmp_path / "tune"), "--output", str(tuned),
                                        "--init", str(output), "--iters", "0", "0", "--batch", "2", "--patch", "16",
                                        "--frames", "1", "7", "--speed", "0.5", "1"]) == 0
    again = em.load_blur_estimator(str(tuned))
    assert again.estimator.config == model.estimator.config
    assert all(torch.equal(v, again.estimator.state_dict()[k]) for k, v in model.estimator.state_dict().items())


# -- files ----------------------------------------------------------------------------------------

def test_file_round_trip_sizes_from_shapes(tmp_path):
    model = tiny_model(kernel_size=9, basis=4)
    path = str(tmp_path / "e.safetensors")
    em.save_blur_estimator(model, path)
    loaded = em.load_blur_estimator(path)
    assert loaded.estimator.config == model.estimator.config and loaded.regressor.config == model.regressor.config
    image = torch.rand(1, 3, 24, 24)
    assert torch.equal(loaded.estimate(image).kernel_map, model.estimate(image).kernel_map)
    # inside a FideDiff adapter file: other keys are ignored
    state = {**em.estimator_state(model), "lora.x": torch.zeros(2), "kcn.y": torch.ones(1)}
    assert em.estimator_from_state(state, "adapter.safetensors").kernel_size == 9


def test_bad_files_are_named(tmp_path):
    from safetensors.torch import save_file

    model = tiny_model()
    state = em.estimator_state(model)
    cases = {
        "empty.safetensors": None,
        "no_regressor.safetensors": {k: v for k, v in state.items() if k.startswith("estimator.")},
        "wrong_shape.safetensors": {**state, "regressor.inp.weight": torch.zeros(8, 50, 1, 1)},
        "missing_key.safetensors": {k: v for k, v in state.items() if k != "estimator.mix_head.bias"},
        "nan.safetensors": {**state, "estimator.stem.bias": torch.full_like(state["estimator.stem.bias"], float("nan"))},
    }
    for name, tensors in cases.items():
        path = tmp_path / name
        if tensors is None:
            path.write_bytes(b"")
        else:
            save_file(tensors, str(path))
        with pytest.raises(CheckpointError) as error:
            em.load_blur_estimator(str(path))
        assert name in str(error.value)
    other = tmp_path / "other.safetensors"
    save_file(state, str(other), metadata={"method": "hidiff"})
    with pytest.raises(CheckpointError, match="not a FideDiff kernel estimator"):
        em.load_blur_estimator(str(other))
