"""HI-Diff training: both stages learn, a run resumes exactly, the written model loads back."""
import dataclasses
import importlib.util
import os
import sys

import pytest
import torch

from conftest import ROOT, pack_module

training = pack_module("models.hidiff.training")
hidiff = pack_module("models.hidiff")
blur = pack_module("models.blur")
image_io = pack_module("models.common.image_io")
sys.path.insert(0, os.path.join(ROOT, "tools"))
# the trainers run on accelerate (the `train` extra, which .ci/run installs)
needs_accelerate = pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="training needs accelerate")


def fixed_batch(seed=0, size=32):
    generator = torch.Generator().manual_seed(seed)
    sharp = torch.rand(2, 3, size, size, generator=generator)
    blurry = blur.convolve(sharp, blur.linear_kernel(7, 6, 30)[0])
    return blurry, sharp


class FixedBatch:
    """A sampler that always gives the same batch."""

    def __init__(self, batch):
        self.fixed, self.batch = batch, batch[0].shape[0]

    def next_batch(self):
        return self.fixed

    def state(self):
        return torch.zeros(1)

    def set_state(self, state):
        pass


@needs_accelerate
@pytest.mark.parametrize("stage,denoiser", [(1, "mixer"), (2, "simple"), (2, "mixer")])
def test_a_few_steps_lower_the_loss(stage, denoiser, tmp_path):
    torch.manual_seed(0)
    model = training.build_model(dataclasses.replace(training.PRESETS["tiny"], denoiser=denoiser, le_activation="gelu"))
    batch = fixed_batch()
    config = training.TrainConfig(iterations=(50, 50), lr=2e-3, seed=0)
    trainer = training.Trainer(model, FixedBatch(batch), config, str(tmp_path))
    if stage == 2:
        trainer.enter_stage(2)
        frozen = {k: v.clone() for k, v in model.net_le.state_dict().items()}
    first = trainer.step()
    for _ in range(14):
        last = trainer.step()
    # the GoPro-style denoiser's clipped eps prediction starts slowly (see training.PRESETS)
    assert last["l_total"] < (0.8 if denoiser == "simple" or stage == 1 else 0.97) * first["l_total"], (first, last)
    if stage == 2:
        assert last["l_prior"] < first["l_prior"]
        assert all(torch.equal(v, model.net_le.state_dict()[k]) for k, v in frozen.items())  # stage-one LE frozen


def test_learning_rate_follows_the_official_shape():
    config = training.TrainConfig(iterations=(300, 300), lr=2e-4, min_lr=1e-6)
    assert config.learning_rate(1, 0) == config.learning_rate(1, 99) == 2e-4
    assert config.learning_rate(1, 200) < 2e-4 and config.learning_rate(2, 299) == pytest.approx(1e-6, rel=0.05)


def sharp_folder(path, count=3, size=48):
    path.mkdir()
    for i in range(count):
        image_io.save_png(blur.dead_leaves(size, torch.Generator().manual_seed(i)), str(path / f"{i}.png"))
    return str(path)


def train_cli(args):
    import train_hidiff

    assert train_hidiff.main(args) == 0


@needs_accelerate
def test_cli_trains_both_stages_and_the_file_round_trips(tmp_path):
    sharp = sharp_folder(tmp_path / "sharp")
    run, output = tmp_path / "run", tmp_path / "trained.safetensors"
    train_cli(["--sharp", sharp, "--run", str(run), "--output", str(output), "--preset", "tiny", "--iters", "3", "2",
               "--batch", "2", "--patch", "32", "--kernel-size", "9", "--log-every", "1", "--val", sharp, "--val-every", "2",
               "--val-count", "1", "--val-crop", "32"])
    log = (run / "loss_log.csv").read_text().splitlines()
    assert log[0].startswith("stage,iteration") and len(log) == 6
    assert log[-1].startswith("2,2,") and log[-1].split(",")[4]  # stage two logs the prior loss
    model = hidiff.load_hidiff(str(output))
    assert model.net_le is not None and model.net_le.config.in_channels == 6
    metadata = pack_module("models.common.checkpoint").read_metadata(str(output))
    assert '"iteration": 2' in metadata["training"] and "sharp images" in metadata["training"]
    path2 = tmp_path / "again.safetensors"
    hidiff.save_hidiff(model, str(path2))
    again = hidiff.load_hidiff(str(path2))
    for part in ("net_g", "net_le_dm", "net_d", "net_le"):
        a, b = getattr(model, part).state_dict(), getattr(again, part).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    out = hidiff.deblur(again, torch.rand(1, 3, 20, 28), seed=1)
    assert out.shape == (1, 3, 20, 28) and torch.isfinite(out).all()


@needs_accelerate
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    sharp = sharp_folder(tmp_path / "sharp", 2, 40)
    common = ["--sharp", sharp, "--preset", "tiny", "--iters", "2", "2", "--batch", "2", "--patch", "32",
              "--kernel-size", "7", "--checkpoint-every", "1", "--seed", "5"]
    train_cli(common + ["--run", str(tmp_path / "straight")])
    # the same run, stopped after three steps (inside stage two) and resumed
    import train_hidiff

    args = train_hidiff.parse_args(common + ["--run", str(tmp_path / "resumed")])
    datasets = pack_module("models.blur.datasets")
    sampler = datasets.PatchSampler(datasets.SharpFolder(sharp), 32, 2, 6, train_hidiff.settings_from(args, blur), (0.5, 1.0))
    torch.manual_seed(5)
    trainer = training.Trainer(training.build_model(training.PRESETS["tiny"]), sampler,
                               training.TrainConfig(iterations=(2, 2), seed=5, checkpoint_every=1), str(tmp_path / "resumed"))
    trainer.run(stop_after=3)
    assert (trainer.stage, trainer.iteration) == (2, 1)
    train_cli(common + ["--run", str(tmp_path / "resumed"), "--resume"])
    a = hidiff.load_hidiff(str(tmp_path / "straight" / "model.safetensors"))
    b = hidiff.load_hidiff(str(tmp_path / "resumed" / "model.safetensors"))
    for part in ("net_g", "net_le_dm", "net_d", "net_le"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), part


@needs_accelerate
def test_cli_fine_tunes_stage_two_from_a_model_with_the_blur_mix(tmp_path):
    sharp = sharp_folder(tmp_path / "sharp")
    start = tmp_path / "start.safetensors"
    torch.manual_seed(0)
    hidiff.save_hidiff(training.build_model(training.PRESETS["tiny"]), str(start))
    run = tmp_path / "run"
    train_cli(["--sharp", sharp, "--run", str(run), "--init", str(start), "--preset", "tiny", "--iters", "0", "2",
               "--batch", "2", "--patch", "32", "--kernel-size", "9", "--log-every", "1", "--mix", "--sharp-share", "0.5",
               "--jpeg-share", "0.5", "--colour-fix", "12"])
    log = (run / "loss_log.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in log[1:]] == [["2", "1"], ["2", "2"]]  # stage two only
    before, after = hidiff.load_hidiff(str(start)), hidiff.load_hidiff(str(run / "model.safetensors"))
    changed = lambda part: any(not torch.equal(a, b) for a, b in zip(getattr(before, part).state_dict().values(),
                                                                    getattr(after, part).state_dict().values()))
    assert changed("net_g") and changed("net_d") and not changed("net_le")  # stage one's encoder stays frozen
    assert after.colour_fix == 12.0 and hidiff.load_hidiff(str(run / "checkpoint.safetensors")).colour_fix == 0.0
    metadata = pack_module("models.common.checkpoint").read_metadata(str(run / "model.safetensors"))
    assert "srgb_share" in metadata["training"]  # the mix is recorded with the model


@needs_accelerate
def test_cli_trains_in_bf16_through_accelerate_and_refuses_fp16_on_the_cpu(tmp_path, capsys):
    sharp = sharp_folder(tmp_path / "sharp", 2, 40)
    common = ["--sharp", sharp, "--preset", "tiny", "--iters", "1", "1", "--batch", "2", "--patch", "32",
              "--kernel-size", "7", "--device", "cpu", "--log-every", "1"]
    train_cli(common + ["--run", str(tmp_path / "bf16"), "--amp", "bf16"])
    rows = (tmp_path / "bf16" / "loss_log.csv").read_text().splitlines()
    assert len(rows) == 3 and all(float(row.split(",")[5]) > 0 for row in rows[1:])  # l_total, finite
    model = hidiff.load_hidiff(str(tmp_path / "bf16" / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in model.net_g.state_dict().values())  # autocast, fp32 weights
    import train_hidiff

    assert train_hidiff.main(common + ["--run", str(tmp_path / "fp16"), "--amp", "fp16"]) == 2
    assert "fp16 needs CUDA" in capsys.readouterr().err
