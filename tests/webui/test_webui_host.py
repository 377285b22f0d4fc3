"""The repository as an extension inside a real WebUI (Forge): it loads without an error report,
lists its models (the WebUI's models/deblur searched), refuses bad requests with a 4xx, reports
progress to and is stopped by the WebUI's own progress and interrupt routes, and its API
route deblurs an example photo exactly as the pack does directly (same model and seed, within one
8-bit level: the WebUI runs its own torch).

Skipped unless WEBUI_PATH names a WebUI checkout with its python (WEBUI_PYTHON, default
$WEBUI_PATH/venv/bin/python); tests/webui/setup_forge.sh makes one from the fetched snapshots.
"""
from __future__ import annotations

import base64
import io
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA, pack_module
from webui_host import WebUIHost

ROOT = Path(__file__).resolve().parents[2]
WEBUI_PATH = os.environ.get("WEBUI_PATH")
OUT = Path(__file__).resolve().parent / "out"
PHOTO = ROOT / "example_images" / "deblur_example_cat_blurred.png"
PACKAGE = "sd_webui_diffusion_deblur"  # scripts/deblur.py's name for the repository

pytestmark = pytest.mark.skipif(not WEBUI_PATH, reason="WebUI tests need WEBUI_PATH: a Forge (or other A1111-family) "
                                "checkout with its venv (or WEBUI_PYTHON); make one with tests/webui/setup_forge.sh")


@pytest.fixture(scope="module")
def webui():
    OUT.mkdir(exist_ok=True)
    host = WebUIHost(WEBUI_PATH, ROOT, log_path=OUT / "webui.log")
    shutil.copytree(os.path.join(DATA, "hidiff_tiny"), host.models_dir / "deblur" / "HI_Diff_Tiny")
    with host:
        yield host


def test_the_extension_loads_without_an_error(webui):
    assert "-" in webui.extension_name  # a folder name no import statement could spell
    assert not webui.extension_errors(PACKAGE), "\n\n".join(webui.extension_errors(PACKAGE))


def test_models_are_listed_from_the_webuis_model_folder(webui):
    listing = webui.get("/deblur/v1/models")
    assert listing["model_folders"][0] == str(webui.models_dir / "deblur")
    by_name = {m["name"]: m for m in listing["methods"]}
    bundled = pack_module("models.hidiff.default_model").DEFAULT_NAME
    assert by_name["HI-Diff"]["models"] == [bundled, "HI_Diff_Tiny"]
    assert by_name["HI-Diff"]["default_model"] == bundled
    assert by_name["DeblurDiff"]["models"] == [] and "model.pth" in by_name["DeblurDiff"]["missing_weights"]


def test_bad_requests_get_a_4xx_with_a_message(webui):
    assert webui.post("/deblur/v1/deblur", {"image": "!!"}) == (400, {"error": "image is not valid base64"})
    status, body = webui.post("/deblur/v1/deblur", {"image": "", "model": "../../webui.py"})
    assert status == 404 and "no model named" in body["error"]
    status, body = webui.post("/deblur/v1/deblur", {"image": "", "method": "DeblurDiff"})
    assert status == 404 and "model.pth into DeblurDiff/" in body["error"]


def test_the_route_deblurs_like_the_pack(webui):
    encoded = base64.b64encode(PHOTO.read_bytes()).decode()
    started = time.perf_counter()
    status, body = webui.post("/deblur/v1/deblur", {"image": encoded, "method": "HI-Diff", "seed": 100, "tile_size": 0})
    assert status == 200, body
    print(f"route: {time.perf_counter() - started:.1f} s for {PHOTO.name}")
    with Image.open(io.BytesIO(base64.b64decode(body["image"]))) as picture:
        got = np.asarray(picture.convert("RGB")).astype(int)
        picture.save(OUT / "route_output.png")
    default = pack_module("models.hidiff.default_model")
    assert body["info"] == {"method": "HI-Diff", "model": default.DEFAULT_NAME, "seed": 100, "tile_size": 0, "precision": "fp32"}
    hidiff = pack_module("models.hidiff")
    with Image.open(PHOTO) as photo:
        rgb = torch.from_numpy(np.asarray(photo.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)[None]
    direct = hidiff.deblur(hidiff.load_hidiff(default.DEFAULT_PATH).eval(), rgb, 100)
    expected = (direct[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(int)
    difference = np.abs(got - expected)
    print(f"route vs pack: max {difference.max()} levels, {np.mean(difference > 0) * 100:.3f}% of values differ")
    assert got.shape == expected.shape and difference.max() <= 1
    assert np.abs(got - np.asarray(Image.open(PHOTO).convert("RGB")).astype(int)).mean() > 1  # it changed the photo


def test_progress_shows_and_interrupt_stops_a_running_request(webui):
    encoded = base64.b64encode(PHOTO.read_bytes()).decode()
    reply = {}
    request = threading.Thread(target=lambda: reply.update(answer=webui.post(  # many small tiles: a long run
        "/deblur/v1/deblur", {"image": encoded, "seed": 1, "tile_size": 64})))
    request.start()
    deadline, running = time.monotonic() + 120, None
    while running is None and time.monotonic() < deadline and request.is_alive():
        progress = webui.get("/sdapi/v1/progress?skip_current_image=true")
        if progress["state"]["job"] == "deblur" and progress["state"]["sampling_step"] > 0:
            running = progress
        time.sleep(0.05)
    assert running is not None, f"no progress seen; reply: {reply}"
    assert 0 < running["progress"] < 1 and running["state"]["sampling_steps"] > running["state"]["sampling_step"]
    assert webui.post("/sdapi/v1/interrupt", {})[0] == 200
    request.join(120)
    assert reply["answer"] == (409, {"error": "deblurring was interrupted"})
    assert webui.get("/sdapi/v1/progress")["state"]["job"] == ""  # the job ended


def test_fidediff_runs_through_the_route_on_the_webuis_sd_base(webui):
    """FideDiff's two files where a WebUI user puts them: the adapter in models/deblur/FideDiff, the SD 2.1
    base it recorded in models/Stable-diffusion (written after start-up, so the WebUI never loads it)."""
    from tiny_fidediff import write_adapter
    from tiny_sd import write_single_file

    base = write_single_file(webui.models_dir / "Stable-diffusion" / "v2-1_512-ema-pruned.safetensors")
    adapter = write_adapter(webui.models_dir / "deblur" / "FideDiff" / "tiny_d8.safetensors", base, 8)
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    status, body = webui.post("/deblur/v1/deblur", {"image": encoded, "method": "FideDiff"})
    assert status == 200, body
    assert body["info"] == {"method": "FideDiff", "model": "FideDiff/tiny_d8.safetensors", "seed": 0, "tile_size": 0,
                            "precision": "fp32"}
    with Image.open(io.BytesIO(base64.b64decode(body["image"]))) as picture:
        got = np.asarray(picture.convert("RGB")).astype(int)
    fidediff, pipeline = pack_module("models.fidediff"), pack_module("models.fidediff.pipeline")
    rgb = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    direct, _ = pipeline.deblur(fidediff.load_fidediff(base, adapter), rgb, pipeline.DeblurOptions(latent_tile=0, vae_tile=0))
    expected = (direct[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(int)
    difference = np.abs(got - expected)
    print(f"FideDiff route vs pack: max {difference.max()} levels, {np.mean(difference > 0) * 100:.3f}% of values differ")
    assert got.shape == expected.shape and difference.max() <= 1
    os.remove(base)
    status, body = webui.post("/deblur/v1/deblur", {"image": encoded, "method": "FideDiff"})
    assert status == 422 and "v2-1_512-ema-pruned.safetensors" in body["error"] and "Stable-diffusion" in body["error"]


def test_osdd_runs_through_the_route_on_the_webuis_sd_base(webui):
    """OSDD's file in models/deblur/OSDD and the SD 2.1 base it recorded in models/Stable-diffusion; γ is the
    gate's, as in the pack's pipeline called directly."""
    from tiny_osdd import write_tiny_osdd
    from tiny_sd import write_single_file

    base = write_single_file(webui.models_dir / "Stable-diffusion" / "v2-1_512-ema-pruned.safetensors")
    weights = write_tiny_osdd(webui.models_dir / "deblur" / "OSDD" / "tiny_osdd.safetensors", base)
    listing = {m["name"]: m for m in webui.get("/deblur/v1/models")["methods"]}["OSDD"]
    assert listing["models"] == ["OSDD/tiny_osdd.safetensors"] and listing["default_seed"] == 0
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    status, body = webui.post("/deblur/v1/deblur", {"image": encoded, "method": "OSDD"})
    assert status == 200, body
    assert body["info"] == {"method": "OSDD", "model": "OSDD/tiny_osdd.safetensors", "seed": 0, "tile_size": 0,
                            "precision": "fp32"}
    with Image.open(io.BytesIO(base64.b64decode(body["image"]))) as picture:
        got = np.asarray(picture.convert("RGB")).astype(int)
    osdd, sd21 = pack_module("models.osdd"), pack_module("models.sd21")
    rgb = torch.from_numpy(np.asarray(photo, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    direct, _ = osdd.deblur(osdd.load_osdd(weights, sd21.load_base(base)), rgb, "auto", torch.device("cpu"))
    expected = (direct[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(int)
    difference = np.abs(got - expected)
    print(f"OSDD route vs pack: max {difference.max()} levels, {np.mean(difference > 0) * 100:.3f}% of values differ")
    assert got.shape == expected.shape and difference.max() <= 1 and not np.array_equal(got, np.asarray(photo))
    os.remove(base)
    status, body = webui.post("/deblur/v1/deblur", {"image": encoded, "method": "OSDD"})
    assert status == 422 and "v2-1_512-ema-pruned.safetensors" in body["error"] and "Stable-diffusion" in body["error"]


def _peak_rss_gib(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 2 ** 20


def test_a_16_megapixel_request_at_default_settings_keeps_the_server_under_8_gib(webui):
    """Issue 20: 4096x4096 at tile_size 0 drove Forge past 12 GiB. Now it runs in tiles or is a 413."""
    buffer = io.BytesIO()
    Image.new("RGB", (4096, 4096)).save(buffer, format="PNG")
    status, body = webui.post("/deblur/v1/deblur", {"image": base64.b64encode(buffer.getvalue()).decode()}, timeout=1800)
    peak = _peak_rss_gib(webui.proc.pid)
    print(f"16 MP request: status {status}, {body.get('info') or body.get('error')}, server peak {peak:.2f} GiB")
    assert status in (200, 413), body
    assert status == 413 and "tile_size" in body["error"] or body["info"]["tile_size"] > 0
    assert peak < 8


def test_only_png_jpeg_webp_are_decoded_and_16_bit_is_scaled(webui):
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="TIFF")
    status, body = webui.post("/deblur/v1/deblur", {"image": base64.b64encode(buffer.getvalue()).decode()})
    assert status == 400 and "PNG, JPEG or WebP" in body["error"]
    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 32).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    status, body = webui.post("/deblur/v1/deblur", {"image": base64.encodebytes(buffer.getvalue()).decode(),
                                                    "model": "HI_Diff_Tiny"})  # line-wrapped base64 too
    assert status == 200, body
    with Image.open(io.BytesIO(base64.b64decode(body["image"]))) as result:
        got = np.asarray(result).astype(np.float64)
    assert got.max() > 255 and np.mean(got >= 65000) < 0.2  # 16 bits back, not clipped white
