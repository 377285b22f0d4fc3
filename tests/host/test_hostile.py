"""A real ComfyUI with a hostile model folder (a zip bomb, a corrupt checkpoint, a web page saved as
.safetensors, two symlink loops): the model lists stay fast, small and complete, each bad file is
named once in the log; and Cancel stops a whole-image HI-Diff run quickly (the delay is printed).

Skipped unless COMFYUI_PATH names a ComfyUI checkout with its own venv (see run_host_tests.sh).
"""
from __future__ import annotations

import json
import os
import struct
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfy_host import ComfyError, ComfyHost

ROOT = Path(__file__).resolve().parents[2]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
OUT = Path(__file__).resolve().parent / "out"
BOMB_BYTES = 512 * 2**20  # what the bomb's data.pkl inflates to (its file is ~0.5 MB)
CANCEL_SIZE = int(os.environ.get("DEBLUR_CANCEL_SIZE", 1024))
BAD_FILES = ("bomb.pth", "corrupt.pth", "page.safetensors", "cut.safetensors")

pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="host tests need COMFYUI_PATH: a ComfyUI checkout with "
                                "a venv (or COMFYUI_PYTHON); run tests/host/run_host_tests.sh")


def write_hostile_files(deblur: Path) -> None:
    with zipfile.ZipFile(deblur / "bomb.pth", "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data.pkl", "w") as entry:
            entry.write(b"kpn.unet.input_blocks controlnet.zero_convs clip.model.token_embedding")
            for _ in range(BOMB_BYTES // 2**20):
                entry.write(bytes(2**20))
    with zipfile.ZipFile(deblur / "corrupt.pth", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"x" * 4096)
    data = bytearray((deblur / "corrupt.pth").read_bytes())
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(signature)
        data[at + offset:at + offset + 2] = struct.pack("<H", 99)  # "That compression method is not supported"
    (deblur / "corrupt.pth").write_bytes(bytes(data))
    (deblur / "page.safetensors").write_text("<!DOCTYPE html><html>Google Drive can't scan this file</html>")
    (deblur / "cut.safetensors").write_bytes(struct.pack("<Q", 4000) + b'{"__metadata__": {"method": "hidiff"}')
    os.symlink(".", deblur / "loopA")
    os.symlink(".", deblur / "loopB")


@pytest.fixture(scope="module")
def host():
    OUT.mkdir(exist_ok=True)
    comfy = ComfyHost(COMFYUI_PATH, ROOT, log_path=OUT / "comfyui_hostile.log")
    from tiny_models import prepare_models

    prepare_models(comfy.models_dir)
    write_hostile_files(comfy.models_dir / "deblur")
    with comfy:
        yield comfy


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def timed_get(host, path, timeout=60):
    started = time.perf_counter()
    with urllib.request.urlopen(host.url + path, timeout=timeout) as reply:
        assert reply.status == 200
        body = json.load(reply)
    return body, time.perf_counter() - started


def test_listings_stay_fast_small_and_complete(host):
    before = rss_mib(host.proc.pid)
    timings = []
    for _ in range(5):
        for node in ("DeblurDiffLoader", "HIDiffLoader"):
            info, seconds = timed_get(host, f"/object_info/{node}")
            timings.append(seconds)
            listed = info[node]["input"]["required"]["model_name"][0]
            expected = "DeblurDiff/model.pth" if node == "DeblurDiffLoader" else "HI_Diff_GoPro"
            assert expected in listed, f"{node} lost its model: {listed}"
            assert not any(Path(name).name in BAD_FILES for name in listed), listed
            assert not any("loop" in name for name in listed), listed
    _, whole = timed_get(host, "/object_info")
    growth = rss_mib(host.proc.pid) - before
    print(f"\nhostile model folder: /object_info/<loader> max {max(timings) * 1000:.0f} ms, "
          f"full /object_info {whole * 1000:.0f} ms, server RSS growth {growth:.0f} MiB")
    assert max(timings) < 5 and growth < 200


def test_each_bad_file_is_named_once_in_the_log(host):
    timed_get(host, "/object_info")
    log = host.log_text()
    for name in BAD_FILES:
        lines = [line for line in log.splitlines() if "skipped" in line and name in line]
        assert len(lines) == 1, f"{name}: {lines or 'not named in the log'}"
    assert "compressed" in next(line for line in log.splitlines() if "bomb.pth" in line)


def test_cancel_stops_a_whole_image_run_quickly(host):
    size = CANCEL_SIZE
    gradient = np.linspace(0, 255, size, dtype=np.float32)
    pixels = np.stack([np.add.outer(gradient, gradient) / 2, np.add.outer(gradient, -gradient) % 256,
                       np.full((size, size), 128.0)], -1).astype(np.uint8)
    Image.fromarray(pixels).save(host.input_dir / "cancel_me.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "cancel_me.png"}},
        "2": {"class_type": "HIDiffLoader", "inputs": {"model_name": "(bundled) hidiff_compact_synthetic", "precision": "fp32"}},
        "3": {"class_type": "HIDiffDeblur", "inputs": {"model": ["2", 0], "image": ["1", 0], "seed": 1,
                                                       "tile_size": 0, "tile_overlap": 32}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
    }
    prompt_id = host.queue(prompt)
    deadline = time.monotonic() + 120
    while not _running(host, prompt_id):
        assert time.monotonic() < deadline, "the prompt never started"
        time.sleep(0.1)
    time.sleep(float(os.environ.get("DEBLUR_CANCEL_AFTER", 6)))  # well inside the restoration pass
    assert _running(host, prompt_id), "the run ended before Cancel; raise DEBLUR_CANCEL_SIZE"
    request = urllib.request.Request(host.url + "/interrupt", data=b"{}", headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    urllib.request.urlopen(request, timeout=30).close()
    while True:
        entry = host._get(f"/history/{prompt_id}").get(prompt_id)
        if entry:
            break
        assert time.perf_counter() - started < 120, "the run did not stop"
        time.sleep(0.02)
    delay = time.perf_counter() - started
    kinds = [kind for kind, _ in entry["status"]["messages"]]
    print(f"\ncancel: a {size}x{size} untiled HI-Diff run stopped {delay:.2f} s after /interrupt")
    (OUT / "cancel_delay.json").write_text(json.dumps({"size": size, "delay_s": round(delay, 3)}))
    assert "execution_interrupted" in kinds, kinds
    assert delay < 3, f"Cancel took {delay:.2f} s"


@pytest.mark.parametrize("node,inputs,words", [
    ("DeblurCompare", {"image_a": ["1", 0], "image_b": ["1", 0], "mode": "split", "split_position": float("nan"),
                       "label_a": "a", "label_b": "b"}, "split_position must be a finite number"),
    ("HIDiffDeblur", {"model": ["3", 0], "image": ["1", 0], "seed": 1, "tile_size": 1, "tile_overlap": 0},
     "tile_size must be 0 plus a multiple of 8, got 1"),
], ids=["NaN split", "1 px tiles"])
def test_numbers_sent_through_the_api_are_checked(host, node, inputs, words):
    photo = next(p.name for p in host.input_dir.iterdir() if p.name.startswith("deblur_example") and p.suffix == ".png")  # not the example clip
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": photo}},
              "2": {"class_type": node, "inputs": inputs},
              "3": {"class_type": "HIDiffLoader", "inputs": {"model_name": "(bundled) hidiff_compact_synthetic", "precision": "fp32"}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}}}
    if node == "DeblurCompare":
        del prompt["3"], prompt["4"]
    started = time.perf_counter()
    with pytest.raises(ComfyError) as error:  # refused by the server's own checks, or by the node's
        host.wait(host.queue(prompt), 60)
    assert words in str(error.value)
    assert time.perf_counter() - started < 30


def _running(host, prompt_id) -> bool:
    return any(item[1] == prompt_id for item in host._get("/queue")["queue_running"])


def test_kernel_preview_and_compare_stay_bounded_on_ordinary_photos(host):
    """Issue 20: Blur Kernel Estimate of a 768² photo into Blur Kernel Preview at its default size used to
    build a 12 GiB picture and kill the server; Deblur Compare of 512x8 beside 1x512 a 262156-px row.
    Both now come back at bounded sizes and the server stays up."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (768, 768, 3), dtype=np.uint8)).save(host.input_dir / "preview_768.png")
    Image.fromarray(rng.integers(0, 256, (8, 512, 3), dtype=np.uint8)).save(host.input_dir / "wide_strip.png")
    Image.fromarray(rng.integers(0, 256, (512, 1, 3), dtype=np.uint8)).save(host.input_dir / "tall_strip.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "preview_768.png"}},
        "2": {"class_type": "BlurKernelEstimate", "inputs": {"image": ["1", 0], "estimator": "(bundled) fidediff_estimator_synthetic",
                                                             "tile_size": 512}},
        "3": {"class_type": "BlurKernelPreview", "inputs": {"kernel": ["2", 0], "size": 256}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "5": {"class_type": "LoadImage", "inputs": {"image": "wide_strip.png"}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "tall_strip.png"}},
        "7": {"class_type": "DeblurCompare", "inputs": {"image_a": ["5", 0], "image_b": ["6", 0], "mode": "side_by_side",
                                                        "split_position": 0.5, "label_a": "a", "label_b": "b"}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    outputs = host.wait(host.queue(prompt), 600)["outputs"]
    for node, side in (("4", 4096), ("8", 16384)):
        (entry,) = outputs[node]["images"]
        with Image.open(host.base / "temp" / entry["subfolder"] / entry["filename"]) as picture:
            assert max(picture.size) <= side and picture.size[0] * picture.size[1] <= 1 << 26, (node, picture.size)
