"""OSDD training at reduced widths on the CPU: each stage lowers its loss on a fixed batch, trains only its
own parts, resumes bit for bit, and the command line chains the stages into one loadable file."""
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, pack_module
from tiny_deblurdiff import single_thread  # noqa: F401  (autouse fixture)
from tiny_sd import write_single_file

pytest.importorskip("accelerate")  # .ci/run installs the training extra (peft, accelerate)

training = pack_module("models.osdd.training")
osdd = pack_module("models.osdd")
datasets = pack_module("models.blur.datasets")
blur = pack_module("models.blur")
lora = pack_module("models.sd21.lora")


@pytest.fixture
def setup(tmp_path):
    sharp = tmp_path / "sharp"
    sharp.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        smooth = np.kron(rng.random((6, 6, 3)), np.ones((8, 8, 1)))
        Image.fromarray((smooth * 255).astype(np.uint8)).save(sharp / f"{i}.png")
    base = write_single_file(tmp_path / "base.safetensors")
    return sharp, base, tmp_path


def sampler(sharp, seed=0):
    settings = blur.BlurSettings(kernel_size=7, intensity=(0.5, 0.5))
    return datasets.PatchSampler(datasets.SharpFolder(str(sharp)), 32, 2, seed, settings)


def trainer(stage, setup, run="run", previous=None, **kw):
    sharp, base, tmp = setup
    config = training.TrainConfig(stage=stage, steps=kw.pop("steps", 6), lr=kw.pop("lr", 3e-3), unet_rank=2, vae_rank=2,
                                  perceptual="features", gan_weight=kw.pop("gan_weight", 0.0), checkpoint_every=1000, **kw)
    return training.OSDDTrainer(config, base, sampler(sharp), str(tmp / run / stage), previous, cpu=True)


def fixed_batch(t):
    batch = t.sampler.next_batch()
    t.sampler.next_batch = lambda: batch


@pytest.mark.parametrize("stage", training.STAGES)
def test_each_stage_lowers_its_loss_and_trains_only_its_parts(stage, setup):
    previous = None
    if stage in ("real", "synthetic", "gate"):  # a first file with the eVAE (and both adapters) non-zero
        first = trainer("evae", setup, steps=1)
        first.run()
        if stage == "gate":
            for name in osdd.ADAPTERS:
                for layer in lora.lora_layers(first.model.unet).values():
                    torch.nn.init.normal_(layer.adapters[name].up.weight, std=0.05)
        previous = str(setup[2] / "first.safetensors")
        first.export(previous)
    t = trainer(stage, setup, previous=previous, gan_weight=0.1 if stage == "real" else 0.0)
    fixed_batch(t)
    before = {k: v.clone() for k, v in osdd.osdd_state(t.model).items()}
    losses = []
    t.run(progress=lambda step, record: losses.append(record["loss"]))
    assert len(losses) == 6 and losses[-1] < losses[0]
    after = osdd.osdd_state(t.model)
    changed = {k.split(".")[0] if not k.startswith("unet_lora") else ".".join(k.split(".")[:2])
               for k in before if not torch.equal(before[k], after[k])}
    expected = {"evae": {"skips", "vae_lora"}, "real": {"unet_lora.real", "text"}, "synthetic": {"unet_lora.synthetic"},
                "gate": {"gate"}}[stage]
    assert changed == expected


def test_resume_is_bit_identical(setup):
    straight = trainer("real", setup, run="a", gan_weight=0.1, steps=4)
    straight.run()
    first = trainer("real", setup, run="b", gan_weight=0.1, steps=4)
    first.run(stop_after=2)
    second = trainer("real", setup, run="b", gan_weight=0.1, steps=4)
    second.load()
    assert second.step_index == 2
    second.run()
    a, b = straight.trainable_state(), second.trainable_state()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="'real' run, not 'gate'"):
        t = trainer("gate", setup, run="b", steps=4)
        t.run_dir = second.run_dir
        t.load()


def test_command_line_chains_the_stages_into_a_loadable_file(setup, monkeypatch):
    sharp, base, tmp = setup
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    import train_osdd

    run = tmp / "cli"
    common = ["--base", base, "--run", str(run), "--steps", "2", "--batch", "2", "--crop", "32", "--unet-rank", "2",
              "--vae-rank", "2", "--perceptual", "features", "--cpu", "--kernel-size", "7"]
    with pytest.raises(SystemExit, match="--paired"):
        train_osdd.main(["--stage", "real", "--sharp", str(sharp)] + common)
    for stage in ("evae", "synthetic", "gate"):
        assert train_osdd.main(["--stage", stage, "--sharp", str(sharp)] + common) == 0
    path = run / "osdd.safetensors"
    metadata = pack_module("models.common.checkpoint").read_metadata(str(path))
    assert metadata["base_name"] == "base.safetensors"  # how the method registry finds the base
    model = osdd.load_osdd(str(path), pack_module("models.sd21").load_base(base))
    out, gammas = osdd.deblur(model, torch.rand(1, 3, 32, 32), "auto", torch.device("cpu"))
    assert out.shape == (1, 3, 32, 32) and 0 < gammas[0] < 1
    assert (run / "gate" / "loss_log.csv").read_text().startswith("stage,step,loss")
