"""A checkpoint's numbers are hostile too: sampler and configuration metadata are validated against
ranges before anything is built or run, with errors naming the file and the field, and NaN or
infinite weights are refused at load (issue 11, finding 6)."""
import json
import math
import os
import threading

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import DATA, pack_module
from tiny_deblurdiff import micro_state, single_thread, write_model  # noqa: F401  (single_thread: autouse fixture)

hidiff = pack_module("models.hidiff")
dd = pack_module("models.deblurdiff")
checkpoint = pack_module("models.common.checkpoint")
CheckpointError = checkpoint.CheckpointError
TINY = os.path.join(DATA, "hidiff_tiny")


@pytest.fixture(scope="module")
def hidiff_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("hidiff") / "pack.safetensors"
    hidiff.save_hidiff(hidiff.load_hidiff(TINY), str(path))
    return path


@pytest.fixture(scope="module")
def deblurdiff_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deblurdiff")
    path = folder / "pack.safetensors"
    dd.save_deblurdiff(dd.load_deblurdiff(write_model(folder / "model.pth", micro_state(0))), str(path))
    return path


def rewrite(source, target, metadata_change=None, tensor_change=None):
    tensors = load_file(str(source))
    metadata = dict(checkpoint.read_metadata(str(source)))
    if metadata_change:
        metadata_change(metadata)
    if tensor_change:
        tensor_change(tensors)
    save_file(tensors, str(target), metadata=metadata)
    return str(target)


def load_within(loader, path, seconds=10):
    """The error ``loader(path)`` raises, failing if it takes longer than ``seconds``."""
    outcome = []

    def attempt():
        try:
            loader(path)
            outcome.append(None)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            outcome.append(error)

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    worker.join(seconds)
    assert outcome, f"loading {path} took more than {seconds} s"
    return outcome[0]


def sampler_with(**change):
    def edit(metadata):
        sampler = json.loads(metadata["sampler"])
        sampler.update(change)
        metadata["sampler"] = json.dumps(sampler)
    return edit


SAMPLER_CASES = {
    "200000 timesteps": (sampler_with(timesteps=200000), "timesteps is 200000"),
    "0 timesteps": (sampler_with(timesteps=0), "timesteps is 0"),
    "negative timesteps": (sampler_with(timesteps=-3), "timesteps is -3"),
    "fractional timesteps": (sampler_with(timesteps=8.5), "timesteps is 8.5"),
    "unknown schedule": (sampler_with(schedule="cosine"), "schedule is 'cosine'"),
    "beta above 1": (sampler_with(linear_end=1.5), "linear_end is 1.5"),
    "NaN beta": (sampler_with(linear_start=math.nan), "linear_start is nan"),
    "unknown prediction": (sampler_with(prediction="v"), "prediction is 'v'"),
    "unknown key": (sampler_with(wobble=1), "unknown settings: wobble"),
    "malformed JSON": (lambda m: m.update(sampler="{timesteps: 8"), "'sampler' is not valid JSON"),
    "not a table": (lambda m: m.update(sampler="[8]"), "'sampler' is not a table"),
}


@pytest.mark.parametrize("case", list(SAMPLER_CASES))
def test_hidiff_sampler_metadata_is_validated(hidiff_file, tmp_path, case):
    change, words = SAMPLER_CASES[case]
    path = rewrite(hidiff_file, tmp_path / "bad.safetensors", change)
    error = load_within(hidiff.load_hidiff, path)
    assert isinstance(error, CheckpointError), f"{case}: loaded without complaint ({error!r})"
    assert path in str(error) and "sampler" in str(error) and words in str(error)


def test_a_valid_sampler_still_loads(hidiff_file, tmp_path):
    path = rewrite(hidiff_file, tmp_path / "ok.safetensors", sampler_with(timesteps=4))
    assert hidiff.load_hidiff(path).sampler.config.timesteps == 4


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_hidiff_non_finite_weights_are_refused(hidiff_file, tmp_path, value):
    def poison(tensors):
        key = next(k for k in tensors if k.startswith("net_g.") and tensors[k].is_floating_point())
        tensors[key].view(-1)[0] = value
    path = rewrite(hidiff_file, tmp_path / "nan.safetensors", tensor_change=poison)
    with pytest.raises(CheckpointError, match="NaN or infinite") as error:
        hidiff.load_hidiff(path)
    assert path in str(error.value) and "net_g" in str(error.value)


def test_deblurdiff_non_finite_weights_are_refused(tmp_path):
    state = micro_state(0)
    key = next(k for k in state if k.startswith("vae."))
    state[key].view(-1)[0] = math.nan
    path = write_model(tmp_path / "model.pth", state)
    with pytest.raises(CheckpointError, match="NaN or infinite") as error:
        dd.load_deblurdiff(path)
    assert path in str(error.value)


def config_with(part, **change):
    def edit(metadata):
        config = json.loads(metadata["config"])
        config[part].update(change)
        metadata["config"] = json.dumps(config)
    return edit


CONFIG_CASES = {
    "ten million blocks": (config_with("unet", num_res_blocks=10**7), "out of range"),
    "more blocks than tensors": (config_with("unet", num_res_blocks=5000), "blocks or layers for the unet"),
    "text layers": (config_with("text_encoder", layers=4000), "text_encoder"),
    "negative width": (config_with("vae", channels=-8), "config.vae.channels = -8"),
    "NaN scale": (lambda m: m.update(config=m["config"].replace('"latent_scale": 0.18215', '"latent_scale": NaN')), "latent_scale"),
    "missing part": (lambda m: m.update(config=json.dumps({k: v for k, v in json.loads(m["config"]).items() if k != "vae"})), "malformed"),
    "head width 0": (config_with("lkpn", head_channels=0), "head width"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_deblurdiff_config_metadata_is_validated(deblurdiff_file, tmp_path, case):
    change, words = CONFIG_CASES[case]
    path = rewrite(deblurdiff_file, tmp_path / "bad.safetensors", change)
    error = load_within(dd.load_deblurdiff, path)
    assert isinstance(error, CheckpointError), f"{case}: {error!r}"
    assert path in str(error) and words in str(error)


def test_a_valid_deblurdiff_file_still_loads(deblurdiff_file):
    model = dd.load_deblurdiff(str(deblurdiff_file))
    assert all(torch.isfinite(p).all() for p in model.parameters())
