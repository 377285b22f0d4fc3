"""OSDD in the method registry (WebUI Extras step, /deblur/v1): the model name is OSDD's file, its base is
found by the file name the file recorded in the host's checkpoints folder and checked by fingerprint; γ is
the learnt gate's; one deterministic step."""
import os

import pytest
import torch

from conftest import pack_module
from tiny_deblurdiff import single_thread  # noqa: F401  (autouse fixture)
from tiny_osdd import write_tiny_osdd
from tiny_sd import write_diffusers_folder, write_single_file

methods = pack_module("models.methods")
osdd = pack_module("models.osdd")
sd21 = pack_module("models.sd21")
CheckpointError = pack_module("models.common.checkpoint").CheckpointError
read_metadata = pack_module("models.common.checkpoint").read_metadata
BASE_NAME = "v2-1_512-ema-pruned.safetensors"
WEIGHTS = "OSDD/tiny_osdd.safetensors"


@pytest.fixture
def tiny_files(models_dir, monkeypatch):
    monkeypatch.delenv("COMFYUI_DEBLUR_CHECKPOINTS", raising=False)
    monkeypatch.delenv("COMFYUI_DEBLUR_DIFFUSERS", raising=False)
    base = write_single_file(models_dir.parent / "checkpoints" / BASE_NAME)  # beside models/deblur, as in ComfyUI
    weights = write_tiny_osdd(models_dir / WEIGHTS, base)
    return base, weights


def direct(base, weights, rgb, tiling=None):
    """The OSDD pipeline called directly, as the nodes do, with the gate's γ."""
    return osdd.deblur(osdd.load_osdd(weights, sd21.load_base(base)), rgb, "auto", torch.device("cpu"), tiling)


def test_the_weights_record_their_base_name_and_are_listed(tiny_files):
    base, weights = tiny_files
    assert read_metadata(weights)["base_name"] == BASE_NAME
    assert methods.get_method("osdd") is methods.OSDD and methods.METHODS[-1] is methods.OSDD
    assert [m.name for m in methods.METHODS] == ["HI-Diff", "DeblurDiff", "FideDiff", "OSDD"]
    assert methods.list_models(methods.OSDD) == [WEIGHTS] and methods.default_model(methods.OSDD) == WEIGHTS


def test_deblur_image_equals_the_pipeline_with_the_gates_gamma(tiny_files):
    base, weights = tiny_files
    rgb = torch.rand(1, 3, 30, 21, generator=torch.Generator().manual_seed(0))
    out, info = methods.deblur_image(methods.OSDD, WEIGHTS, rgb, methods.Settings(seed=7))
    expected, gammas = direct(base, weights, rgb)
    assert torch.equal(out, expected.clamp(0, 1)) and not torch.equal(out, rgb) and out.shape == rgb.shape
    assert gammas[0] not in (0.0, 0.5, 1.0)  # the tiny gate is trained-like: γ is its own, not a default
    assert info == {"method": "OSDD", "model": WEIGHTS, "seed": 7, "tile_size": 0, "precision": "fp32"}
    again, _ = methods.deblur_image(methods.OSDD, WEIGHTS, rgb, methods.Settings(seed=8))
    assert torch.equal(again, out)  # deterministic: the seed is not used


def test_tiles_follow_the_setting_in_whole_unet_multiples(tiny_files):
    base, weights = tiny_files
    model = methods.OSDD.load(weights, torch.float32)
    multiple, f = model.pad_multiple, model.evae.downsampling
    assert methods._osdd_tiling(model, methods.Settings(seed=0)) is None
    tiling = methods._osdd_tiling(model, methods.Settings(seed=0, tile_size=multiple * 4 + 8))
    assert (tiling.tile, tiling.stride) == (multiple * 4, multiple * 2)  # rounded down to the UNet's multiple
    assert methods._osdd_tiling(model, methods.Settings(seed=0, tile_size=64)).tile >= multiple
    assert tiling.stride % f == 0
    rgb = torch.rand(1, 3, 72, 80, generator=torch.Generator().manual_seed(1))
    out, info = methods.deblur_image(methods.OSDD, WEIGHTS, rgb, methods.Settings(seed=0, tile_size=64))
    expected, _ = direct(base, weights, rgb, methods._osdd_tiling(model, methods.Settings(seed=0, tile_size=64)))
    whole, _ = methods.deblur_image(methods.OSDD, WEIGHTS, rgb, methods.Settings(seed=0))
    assert info["tile_size"] == 64 and torch.equal(out, expected.clamp(0, 1)) and not torch.equal(out, whole)


def test_a_missing_base_is_named_with_the_folders_searched(tiny_files, models_dir):
    base, _ = tiny_files
    os.rename(base, base + ".moved")
    assert methods.list_models(methods.OSDD) == [WEIGHTS]  # the weights are there; their base is not
    with pytest.raises(FileNotFoundError) as caught:
        methods.deblur_image(methods.OSDD, WEIGHTS, torch.rand(1, 3, 16, 16), methods.Settings(seed=0))
    message = str(caught.value)
    assert message.startswith("OSDD: ") and repr(BASE_NAME) in message and "tiny_osdd" in message
    assert str(models_dir.parent / "checkpoints") in message


def test_a_base_of_that_name_with_other_weights_is_refused_and_the_right_one_is_found(tiny_files, models_dir):
    base, weights = tiny_files
    write_single_file(models_dir.parent / "checkpoints" / "old" / BASE_NAME, seed=5)  # listed first ("old/…")
    assert methods.OSDD.load(weights, torch.float32).base_source == base  # the second of that name fits
    os.remove(base)
    with pytest.raises(CheckpointError, match="was trained on another base"):
        methods.OSDD.load(weights, torch.float32)


def test_a_diffusers_folder_of_the_recorded_name_is_a_base(models_dir, monkeypatch):
    folder = write_diffusers_folder(models_dir.parent / "diffusers" / "sd21-base")
    monkeypatch.setenv("COMFYUI_DEBLUR_CHECKPOINTS", "")
    monkeypatch.setenv("COMFYUI_DEBLUR_DIFFUSERS", str(models_dir.parent / "diffusers"))
    weights = write_tiny_osdd(models_dir / WEIGHTS, folder + os.sep)  # a trailing separator still names the folder
    assert read_metadata(weights)["base_name"] == "sd21-base"
    loaded = methods.OSDD.load(methods.model_path(methods.OSDD, WEIGHTS), torch.float32)
    assert os.path.normpath(loaded.base_source) == os.path.normpath(folder)


def test_no_weights_says_there_is_no_release_and_how_to_train_them(models_dir):
    assert methods.list_models(methods.OSDD) == []
    with pytest.raises(FileNotFoundError) as caught:
        methods.model_path(methods.OSDD, WEIGHTS)
    message = str(caught.value)
    assert message.startswith(f"No OSDD model found in {models_dir}") and "no official OSDD release" in message
    assert "tools/train_osdd.py" in message and "models/deblur/OSDD/" in message and BASE_NAME in message


def test_auto_precision_is_half_on_gpus_and_fp32_on_the_cpu():
    assert methods.OSDD.auto_dtype(torch.device("cuda")) == torch.float16
    assert methods.OSDD.auto_dtype(torch.device("mps")) == torch.float16
    assert methods.OSDD.auto_dtype(torch.device("cpu")) == torch.float32
