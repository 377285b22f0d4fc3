"""FideDiff in the method registry (WebUI Extras step, /deblur/v1): the model name is the adapter, its
base is found by the file name it recorded in the host's checkpoints folder and checked by fingerprint."""
import os

import pytest
import torch

from conftest import pack_module
from tiny_deblurdiff import single_thread  # noqa: F401  (autouse fixture)
from tiny_fidediff import write_adapter
from tiny_sd import write_diffusers_folder, write_single_file

methods = pack_module("models.methods")
fidediff = pack_module("models.fidediff")
pipeline = pack_module("models.fidediff.pipeline")
CheckpointError = pack_module("models.common.checkpoint").CheckpointError
BASE_NAME = "v2-1_512-ema-pruned.safetensors"
ADAPTER = "FideDiff/tiny_d4.safetensors"


@pytest.fixture
def tiny_fidediff(models_dir, monkeypatch):
    monkeypatch.delenv("COMFYUI_DEBLUR_CHECKPOINTS", raising=False)
    monkeypatch.delenv("COMFYUI_DEBLUR_DIFFUSERS", raising=False)
    base = write_single_file(models_dir.parent / "checkpoints" / BASE_NAME)  # beside models/deblur, as in ComfyUI
    adapter = write_adapter(models_dir / ADAPTER, base, 4)
    return base, adapter


def test_the_adapter_is_listed_and_deblurs_as_the_pipeline_does(tiny_fidediff):
    base, adapter = tiny_fidediff
    assert methods.get_method("fidediff") is methods.FIDEDIFF
    assert methods.list_models(methods.FIDEDIFF) == [ADAPTER] and methods.default_model(methods.FIDEDIFF) == ADAPTER
    rgb = torch.rand(1, 3, 30, 21, generator=torch.Generator().manual_seed(0))
    out, info = methods.deblur_image(methods.FIDEDIFF, ADAPTER, rgb, methods.Settings(seed=0))
    direct, _ = pipeline.deblur(fidediff.load_fidediff(base, adapter), rgb, pipeline.DeblurOptions(latent_tile=0, vae_tile=0))
    assert torch.equal(out, direct.clamp(0, 1)) and not torch.equal(out, rgb)
    assert info == {"method": "FideDiff", "model": ADAPTER, "seed": 0, "tile_size": 0, "precision": "fp32"}


def test_tiles_follow_the_setting_in_image_pixels(tiny_fidediff):
    base, adapter = tiny_fidediff
    model = fidediff.load_fidediff(base, adapter)
    options = methods._fidediff_options(model, methods.Settings(seed=0, tile_size=64))
    assert (options.latent_tile, options.vae_tile) == (16, 128)  # d = 4: 64 image px = 128 autoencoder px = 16 latent px
    options.validate()
    rgb = torch.rand(1, 3, 72, 80, generator=torch.Generator().manual_seed(1))
    out, info = methods.deblur_image(methods.FIDEDIFF, ADAPTER, rgb, methods.Settings(seed=0, tile_size=64))
    whole, _ = methods.deblur_image(methods.FIDEDIFF, ADAPTER, rgb, methods.Settings(seed=0))
    assert info["tile_size"] == 64 and out.shape == rgb.shape and not torch.equal(out, whole)  # it did tile


def test_a_missing_base_is_named_with_the_folders_searched(tiny_fidediff, models_dir):
    base, _ = tiny_fidediff
    os.rename(base, base + ".moved")
    assert methods.list_models(methods.FIDEDIFF) == [ADAPTER]  # the adapter is there; its base is not
    with pytest.raises(FileNotFoundError) as caught:
        methods.deblur_image(methods.FIDEDIFF, ADAPTER, torch.rand(1, 3, 16, 16), methods.Settings(seed=0))
    message = str(caught.value)
    assert repr(BASE_NAME) in message and str(models_dir.parent / "checkpoints") in message and "tiny_d4" in message


def test_a_base_of_that_name_with_other_weights_is_refused_and_the_right_one_is_found(tiny_fidediff, models_dir, monkeypatch):
    base, adapter = tiny_fidediff
    write_single_file(models_dir.parent / "checkpoints" / "old" / BASE_NAME, seed=5)  # listed first ("old/…")
    assert methods.FIDEDIFF.load(adapter, torch.float32).adapter_source == adapter  # the second of that name fits
    os.remove(base)
    with pytest.raises(CheckpointError, match="chosen base .*old.*has fingerprint"):
        methods.FIDEDIFF.load(adapter, torch.float32)


def test_a_diffusers_folder_of_the_recorded_name_is_a_base(models_dir, monkeypatch):
    folder = write_diffusers_folder(models_dir.parent / "diffusers" / "sd21-base")
    monkeypatch.setenv("COMFYUI_DEBLUR_CHECKPOINTS", "")
    monkeypatch.setenv("COMFYUI_DEBLUR_DIFFUSERS", str(models_dir.parent / "diffusers"))
    write_adapter(models_dir / ADAPTER, folder, 8)
    assert methods.FIDEDIFF.load(methods.model_path(methods.FIDEDIFF, ADAPTER), torch.float32).latent_downsample == 8


def test_no_adapter_says_there_is_no_release_and_how_to_train_one(models_dir):
    assert methods.list_models(methods.FIDEDIFF) == []
    with pytest.raises(FileNotFoundError) as caught:
        methods.model_path(methods.FIDEDIFF, ADAPTER)
    message = str(caught.value)
    assert str(models_dir) in message and "no official FideDiff release" in message
    assert "tools/train_fidediff.py" in message and "models/deblur/FideDiff/" in message and BASE_NAME in message


def test_the_base_listing_is_cached_between_calls(tiny_fidediff):
    discovery = pack_module("models.common.discovery")
    base_files = pack_module("models.sd21.base_files")
    first = base_files.base_choices()
    cached = len(discovery._listings)
    assert base_files.base_choices() == first and len(discovery._listings) == cached  # one entry per folder, reused
    assert base_files.choices_named(BASE_NAME) == [f"checkpoints/{BASE_NAME}"] and base_files.choices_named("../x") == []
