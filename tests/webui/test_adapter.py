"""The WebUI adapter without a WebUI: what the Extras step and the API route accept and refuse, what they
return, and the WebUI backend's progress and Interrupt/Skip against a stand-in ``modules`` package."""
from __future__ import annotations

import base64
import io
import os
import re
import sys
import types
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA, pack_module

adapter = pack_module("webui.adapter")
methods = pack_module("models.methods")
runtime = pack_module("models.common.runtime")
hidiff = pack_module("models.hidiff")
BUNDLED = pack_module("models.hidiff.default_model").DEFAULT_NAME


def _png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _photo(size=(24, 20), mode="RGB", seed=0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], len(mode)), dtype=np.uint8)
    return Image.fromarray(pixels[..., 0] if mode == "L" else pixels, mode)


@pytest.fixture
def tiny_model(models_dir):
    os.symlink(os.path.join(DATA, "hidiff_tiny"), models_dir / "HI_Diff_GoPro")
    return "HI_Diff_GoPro"


def test_defaults_are_the_bundled_hidiff_model_and_its_official_seed():
    request = adapter.parse_request()
    assert (request.method.name, request.model) == ("HI-Diff", BUNDLED)
    assert request.settings == methods.Settings(seed=100, tile_size=0, precision="auto")


def test_gradio_numbers_arrive_as_floats_and_are_taken_when_whole():
    request = adapter.parse_request("hi-diff", "", 7.0, 64.0, "fp16")
    assert request.settings == methods.Settings(seed=7, tile_size=64, precision="fp16")
    assert request.method is methods.HIDIFF


@pytest.mark.parametrize("arguments, message", [
    ({"method": "SUPIR"}, "unknown method"),
    ({"seed": -1}, "seed must be"),
    ({"seed": 2 ** 64}, "seed must be"),
    ({"seed": 1.5}, "whole number"),
    ({"seed": float("nan")}, "whole number"),
    ({"seed": True}, "whole number"),
    ({"seed": "5"}, "whole number"),
    ({"tile_size": 13}, "tile_size must be"),
    ({"tile_size": 32}, "tile_size must be"),
    ({"tile_size": 9000}, "tile_size must be"),
    ({"precision": "fp64"}, "precision must be"),
    ({"precision": ["fp16"]}, "precision must be"),
    ({"model": 3}, "model must be a name"),
])
def test_bad_choices_are_refused_with_a_message(arguments, message):
    with pytest.raises(adapter.RequestError, match=message) as caught:
        adapter.parse_request(**arguments)
    assert caught.value.status == 400


def test_only_listed_model_names_are_accepted(tiny_model, models_dir):
    (models_dir.parent / "outside.safetensors").write_bytes(b"not a model")
    assert methods.list_models(methods.HIDIFF) == [BUNDLED, tiny_model]  # the bundled one first
    assert adapter.parse_request(model=tiny_model).model == tiny_model
    for name in ("../outside.safetensors", str(models_dir.parent / "outside.safetensors"), "HI_Diff_RealBlur_J"):
        with pytest.raises(adapter.RequestError, match="available: " + re.escape(BUNDLED)) as caught:
            adapter.parse_request(model=name)
        assert caught.value.status == 404
    assert methods.model_path(methods.HIDIFF, tiny_model) == str(models_dir / tiny_model)


def test_a_method_without_weights_says_which_file_goes_where(models_dir):
    with pytest.raises(adapter.RequestError) as caught:
        adapter.parse_request("DeblurDiff")
    assert caught.value.status == 404
    assert "model.pth into DeblurDiff/" in str(caught.value) and str(models_dir) in str(caught.value)
    listing = adapter.models_listing()
    entry = {m["name"]: m for m in listing["methods"]}
    assert listing["model_folders"] == [str(models_dir)]
    assert entry["DeblurDiff"]["models"] == [] and "model.pth" in entry["DeblurDiff"]["missing_weights"]
    assert entry["HI-Diff"]["default_model"] == BUNDLED and entry["HI-Diff"]["missing_weights"] is None


def test_the_route_returns_what_the_pack_computes(tiny_model):
    photo = _photo()
    status, body = adapter.handle_deblur({"image": _png(photo), "model": tiny_model, "seed": 3})
    assert status == 200
    assert body["info"] == {"method": "HI-Diff", "model": tiny_model, "seed": 3, "tile_size": 0, "precision": "fp32"}
    with Image.open(io.BytesIO(base64.b64decode(body["image"]))) as result:
        got = np.asarray(result)
    rgb = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    expected = hidiff.deblur(hidiff.load_hidiff(os.path.join(DATA, "hidiff_tiny")), rgb, 3)
    expected = (expected[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert got.shape == expected.shape and np.abs(got.astype(int) - expected).max() <= 1
    assert not np.array_equal(got, np.asarray(photo))  # it did something


def test_alpha_and_grey_pass_through(tiny_model):
    rgba = _photo(mode="RGBA", seed=1)
    out, info = adapter.deblur_pil(rgba, adapter.parse_request(model=tiny_model, seed=1))
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out.getchannel("A")), np.asarray(rgba.getchannel("A")))
    grey, _ = adapter.deblur_pil(_photo(mode="L"), adapter.parse_request(model=tiny_model))
    assert grey.mode == "L" and grey.size == (24, 20)
    assert adapter.png_info(info) == {"Deblur method": "HI-Diff", "Deblur model": tiny_model, "Deblur seed": 1,
                                      "Deblur tile size": 0, "Deblur precision": "fp32"}


def test_tiles_run_and_differ_from_whole_image_only_by_the_tiling(tiny_model):
    photo = _photo(size=(160, 96), seed=2)
    whole, _ = adapter.deblur_pil(photo, adapter.parse_request(model=tiny_model))
    tiled, info = adapter.deblur_pil(photo, adapter.parse_request(model=tiny_model, tile_size=64))
    assert info["tile_size"] == 64 and tiled.size == whole.size


@pytest.mark.parametrize("payload, status, message", [
    ([1], 400, "JSON object"),
    ({"seed": 1}, 400, "image is required"),
    ({"image": "a", "strength": 2}, 400, "unknown field"),
    ({"image": "not base64!"}, 400, "not valid base64"),
    ({"image": base64.b64encode(b"plain text").decode()}, 400, "could not be decoded"),
    ({"image": "", "method": "x"}, 400, "unknown method"),
    ({"image": 5}, 400, "base64-encoded"),
])
def test_bad_requests_get_a_4xx_and_a_message(payload, status, message):
    got, body = adapter.handle_deblur(payload)
    assert got == status and message in body["error"]


def test_huge_images_are_refused_before_decoding(monkeypatch):
    monkeypatch.setattr(adapter, "MAX_REQUEST_PIXELS", 100)
    status, body = adapter.handle_deblur({"image": _png(_photo(size=(11, 10)))})
    assert status == 413 and "11x10" in body["error"]


def test_a_broken_model_is_a_422_naming_the_file(models_dir):
    folder = models_dir / "HI_Diff_Broken"  # listed (the release's three files are there) but not loadable
    folder.mkdir()
    for part in ("net_g", "net_le_dm", "net_d"):
        (folder / f"{part}.pth").write_bytes(b"\x00" * 64)
    assert "HI_Diff_Broken" in methods.list_models(methods.HIDIFF)
    status, body = adapter.handle_deblur({"image": _png(_photo()), "model": "HI_Diff_Broken"})
    assert status == 422 and "net_" in body["error"] and "HI_Diff_Broken" in body["error"]


# --- the WebUI backend against a stand-in of the WebUI's modules ---------------------------------------

@pytest.fixture
def fake_webui(tmp_path, monkeypatch):
    state = types.SimpleNamespace(interrupted=False, skipped=False, stopping_generation=False, sampling_step=0,
                                  sampling_steps=0, textinfo=None, job="", begin=lambda job: None, end=lambda: None)
    gc_calls = []
    stubs = {
        "modules": types.ModuleType("modules"),
        "modules.devices": types.SimpleNamespace(get_device_for=lambda task: "cpu", torch_gc=lambda: gc_calls.append(1)),
        "modules.paths": types.SimpleNamespace(models_path=str(tmp_path / "models")),
        "modules.script_callbacks": types.SimpleNamespace(on_app_started=lambda callback, name=None: None),
        "modules.scripts_postprocessing": types.SimpleNamespace(ScriptPostprocessing=object),
        "modules.shared": types.SimpleNamespace(state=state),
        "modules.call_queue": types.SimpleNamespace(queue_lock=__import__("threading").Lock()),
    }
    for name, module in stubs.items():
        if name != "modules":
            setattr(stubs["modules"], name.split(".")[1], module)
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.delitem(sys.modules, f"{adapter.__name__.rsplit('.', 1)[0]}.backend", raising=False)
    backend = pack_module("webui.backend")
    previous = runtime.current()
    backend.install()
    yield types.SimpleNamespace(state=state, backend=backend, gc_calls=gc_calls, models=tmp_path / "models" / "deblur")
    runtime.use(previous)
    sys.modules.pop(backend.__name__, None)


def test_webui_backend_reports_steps_and_frees_memory(fake_webui, monkeypatch):
    monkeypatch.delenv("COMFYUI_DEBLUR_MODELS", raising=False)
    assert runtime.model_dirs() == [str(fake_webui.models)] and fake_webui.models.is_dir()
    assert runtime.host_model_dirs("checkpoints") == [str(fake_webui.models.parent / "Stable-diffusion")]
    out, _ = adapter.deblur_pil(_photo(), adapter.parse_request())
    model = hidiff.load_hidiff(methods.HIDIFF.bundled()[BUNDLED])
    assert fake_webui.state.sampling_steps == hidiff.steps_per_image(model, 20, 24) == fake_webui.state.sampling_step
    assert fake_webui.gc_calls  # the cache was emptied after the run


@pytest.mark.parametrize("flag", ["interrupted", "skipped"])
def test_webui_interrupt_and_skip_stop_between_steps(fake_webui, flag):
    steps = []
    original = fake_webui.backend._StateProgress.update

    def update(self, n=1):
        original(self, n)
        steps.append(n)
        if len(steps) == 2:
            setattr(fake_webui.state, flag, True)

    fake_webui.backend._StateProgress.update = update
    try:
        status, body = adapter.handle_deblur({"image": _png(_photo())})
    finally:
        fake_webui.backend._StateProgress.update = original
    assert (status, body) == (409, {"error": f"deblurring was {flag}"})
    assert len(steps) == 2  # stopped at the next step


# --- the Extras step's process() against the stand-in WebUI (gradio stood in by its Error class) ---------

@pytest.fixture
def extras_step(fake_webui, monkeypatch):
    class GradioError(Exception):
        pass

    monkeypatch.setitem(sys.modules, "gradio", types.SimpleNamespace(Error=GradioError))
    name = f"{adapter.__name__.rsplit('.', 1)[0]}.extras_step"
    monkeypatch.delitem(sys.modules, name, raising=False)
    module = pack_module("webui.extras_step")
    yield types.SimpleNamespace(step=module.DeblurExtrasStep(), GradioError=GradioError, state=fake_webui.state)
    sys.modules.pop(name, None)


def _pp(image):
    return types.SimpleNamespace(image=image, info={})


def test_extras_step_deblurs_and_records_how(extras_step):
    photo = _photo()
    pp = _pp(photo)
    extras_step.step.process(pp, enable=True, method="HI-Diff", model=BUNDLED, seed=7.0, tile_size=0, precision="auto")
    assert pp.image.size == photo.size and not np.array_equal(np.asarray(pp.image), np.asarray(photo))
    assert pp.info == {"Deblur method": "HI-Diff", "Deblur model": BUNDLED, "Deblur seed": 7,
                       "Deblur tile size": 0, "Deblur precision": "fp32"}
    untouched = _pp(photo)
    extras_step.step.process(untouched, enable=False)
    assert untouched.image is photo and untouched.info == {}


def test_extras_step_says_which_file_goes_where_and_leaves_an_interrupted_image(extras_step, monkeypatch):
    monkeypatch.delenv("COMFYUI_DEBLUR_MODELS", raising=False)
    with pytest.raises(extras_step.GradioError, match="model.pth into DeblurDiff/"):
        extras_step.step.process(_pp(_photo()), enable=True, method="DeblurDiff", model=None)
    extras_step.state.interrupted = True
    photo = _photo()
    pp = _pp(photo)
    extras_step.step.process(pp, enable=True)
    assert pp.image is photo and pp.info == {}


def test_out_of_memory_retries_in_smaller_tiles_and_says_so(tiny_model, monkeypatch):
    class OutOfMemory(Exception):
        pass

    class SmallDevice(runtime.Host):  # fits 256 px tiles, not the whole 600 px image nor 512 px tiles
        def is_out_of_memory(self, error):
            return isinstance(error, OutOfMemory)

    tiles = []
    run = methods.HIDIFF.run

    def run_within_memory(model, rgb, settings, device, on_step):
        tiles.append(settings.tile_size)
        if settings.tile_size == 0 or settings.tile_size > 256:
            raise OutOfMemory("CUDA out of memory")
        return run(model, rgb, settings, device, on_step)

    monkeypatch.setattr(methods, "HIDIFF", replace(methods.HIDIFF, run=run_within_memory))
    previous = runtime.use(SmallDevice())
    try:
        out, info = methods.deblur_image(methods.HIDIFF, tiny_model, torch.rand(1, 3, 40, 600), methods.Settings(seed=1))
    finally:
        runtime.use(previous)
    assert tiles == [0, 512, 256] and info["tile_size"] == 256 and out.shape == (1, 3, 40, 600)
    assert [methods.smaller_tile(t) for t in (0, 4096, 512, 256, 128)] == [512, 512, 256, 128, None]


def test_webui_interrupt_reaches_inside_the_restoration_pass(fake_webui, monkeypatch):
    events = []
    load = methods.HIDIFF.load

    def press_interrupt(*_):
        events.append("restoring")
        fake_webui.state.interrupted = True

    def load_watched(path, dtype):  # Interrupt pressed once the restoration transformer has started
        model = load(path, dtype)
        model.net_g.register_forward_pre_hook(press_interrupt)
        model.net_g.output.register_forward_hook(lambda *_: events.append("finished"))
        return model

    monkeypatch.setattr(methods, "METHODS", [replace(methods.HIDIFF, load=load_watched), *methods.METHODS[1:]])
    status, body = adapter.handle_deblur({"image": _png(_photo())})
    assert (status, body) == (409, {"error": "deblurring was interrupted"})
    assert events == ["restoring"]  # stopped before the pass's output layer


# --- FideDiff: an adapter in models/deblur/FideDiff, its SD 2.1 base in the WebUI's models/Stable-diffusion ---

def test_fidediff_is_a_choice_that_says_how_to_get_weights(models_dir):
    assert adapter.method_names() == ["HI-Diff", "DeblurDiff", "FideDiff", "OSDD"]
    entry = {m["name"]: m for m in adapter.models_listing()["methods"]}["FideDiff"]
    assert entry["models"] == [] and entry["default_model"] is None and entry["weights"] == []
    assert "no official FideDiff release" in entry["missing_weights"] and "tools/train_fidediff.py" in entry["missing_weights"]
    with pytest.raises(adapter.RequestError, match="train an adapter with tools/train_fidediff.py") as caught:
        adapter.parse_request("FideDiff")
    assert caught.value.status == 404


def test_extras_step_runs_fidediff_on_the_webui_base_and_names_a_missing_one(extras_step, fake_webui):
    from tiny_fidediff import write_adapter
    from tiny_sd import write_single_file

    base = write_single_file(fake_webui.models.parent / "Stable-diffusion" / "v2-1_512-ema-pruned.safetensors")
    write_adapter(fake_webui.models / "FideDiff" / "tiny_d8.safetensors", base, 8)
    assert pack_module("webui.extras_step")._choices("FideDiff") == ["FideDiff/tiny_d8.safetensors"]
    photo = _photo()
    pp = _pp(photo)
    extras_step.step.process(pp, enable=True, method="FideDiff", model="", seed=None, tile_size=0, precision="auto")
    assert pp.image.size == photo.size and not np.array_equal(np.asarray(pp.image), np.asarray(photo))
    assert pp.info["Deblur method"] == "FideDiff" and pp.info["Deblur model"] == "FideDiff/tiny_d8.safetensors"
    os.remove(base)
    status, body = adapter.handle_deblur({"image": _png(photo), "method": "FideDiff"})
    assert status == 422 and "v2-1_512-ema-pruned.safetensors" in body["error"] and "Stable-diffusion" in body["error"]


# --- OSDD: its file in models/deblur/OSDD, its SD 2.1 base in the WebUI's models/Stable-diffusion ---

def test_osdd_is_a_choice_that_says_how_to_get_weights(models_dir):
    assert "OSDD" in adapter.method_names()
    entry = {m["name"]: m for m in adapter.models_listing()["methods"]}["OSDD"]
    assert entry["models"] == [] and entry["default_model"] is None and entry["weights"] == []
    assert "no official OSDD release" in entry["missing_weights"] and "models/deblur/OSDD/" in entry["missing_weights"]
    with pytest.raises(adapter.RequestError, match="train one with tools/train_osdd.py") as caught:
        adapter.parse_request("OSDD")
    assert caught.value.status == 404


def test_extras_step_and_route_run_osdd_on_the_webui_base_and_name_a_missing_one(extras_step, fake_webui):
    from tiny_osdd import write_tiny_osdd
    from tiny_sd import write_single_file

    base = write_single_file(fake_webui.models.parent / "Stable-diffusion" / "v2-1_512-ema-pruned.safetensors")
    weights = write_tiny_osdd(fake_webui.models / "OSDD" / "tiny_osdd.safetensors", base)
    assert pack_module("webui.extras_step")._choices("OSDD") == ["OSDD/tiny_osdd.safetensors"]
    photo = _photo()
    pp = _pp(photo)
    extras_step.step.process(pp, enable=True, method="OSDD", model="", seed=None, tile_size=0, precision="auto")
    assert pp.info == {"Deblur method": "OSDD", "Deblur model": "OSDD/tiny_osdd.safetensors", "Deblur seed": 0,
                       "Deblur tile size": 0, "Deblur precision": "fp32"}
    osdd, sd21 = pack_module("models.osdd"), pack_module("models.sd21")
    rgb, mode, alpha = adapter.to_tensor(photo)
    direct, _ = osdd.deblur(osdd.load_osdd(weights, sd21.load_base(base)), rgb, "auto", torch.device("cpu"))
    assert np.array_equal(np.asarray(pp.image), np.asarray(adapter.to_pil(direct, mode, alpha)))
    assert not np.array_equal(np.asarray(pp.image), np.asarray(photo))
    status, body = adapter.handle_deblur({"image": _png(photo), "method": "OSDD"})
    assert status == 200 and body["info"]["method"] == "OSDD"
    os.remove(base)
    status, body = adapter.handle_deblur({"image": _png(photo), "method": "OSDD"})
    assert status == 422 and "v2-1_512-ema-pruned.safetensors" in body["error"] and "Stable-diffusion" in body["error"]
