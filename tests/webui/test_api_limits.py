"""What the API accepts (formats, 16-bit, EXIF, base64 forms, sizes) and how memory follows the tile:
big requests under a hard memory ceiling (a child process under ``RLIMIT_AS``) complete in tiles or
are refused with 413, never crash."""
from __future__ import annotations

import base64
import io
import json
import os
import re
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA, ROOT, pack_module

adapter = pack_module("webui.adapter")
image_io = pack_module("models.common.image_io")
memory = pack_module("models.common.memory")
methods = pack_module("models.methods")
runtime = pack_module("models.common.runtime")


def _encoded(image: Image.Image, format="PNG", **options) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return base64.b64encode(buffer.getvalue()).decode()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` (8-bit RGB) and holds no pixels: only a reader that
    decodes before checking the size would spend memory on it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(b"IEND", b"")


@pytest.fixture
def identity(monkeypatch):
    """The registry's run replaced by the identity: the route's decoding and encoding seen exactly."""
    monkeypatch.setattr(methods, "deblur_image", lambda method, model, rgb, settings: (rgb.clone(), {"tile_size": 0}))


def _reply(body) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(body["image"])))


# --- formats ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("format", ["TIFF", "BMP", "GIF"])
def test_formats_other_than_png_jpeg_webp_are_refused(format, identity):
    status, body = adapter.handle_deblur({"image": _encoded(Image.new("RGB", (8, 8)), format)})
    assert status == 400 and "PNG, JPEG or WebP" in body["error"]


@pytest.mark.parametrize("format", ["PNG", "JPEG", "WEBP"])
def test_png_jpeg_and_webp_are_decoded(format, identity):
    status, body = adapter.handle_deblur({"image": _encoded(Image.new("RGB", (8, 6), (200, 100, 50)), format)})
    assert status == 200 and _reply(body).size == (8, 6)


def test_postscript_never_reaches_ghostscript(monkeypatch, identity, tmp_path):
    from PIL import EpsImagePlugin

    calls = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(OSError("gs")))
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", "gs", raising=False)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke showpage\n%%EOF\n"
    status, body = adapter.handle_deblur({"image": base64.b64encode(eps).decode()})
    assert status == 400 and not calls
    path = tmp_path / "photo.png"  # the command line reads by content: a PostScript file named like a PNG
    path.write_bytes(eps)
    with pytest.raises(image_io.ImageReadError):
        image_io.read_image_and_alpha(str(path))
    assert not calls


def test_error_texts_hold_no_object_addresses():
    for payload in (base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode(), base64.b64encode(b"GIF89a junk").decode()):
        status, body = adapter.handle_deblur({"image": payload})
        assert status == 400 and not re.search(r"at 0x[0-9a-fA-F]+|object at", body["error"]), body


def test_damaged_data_of_any_kind_is_a_named_read_error(tmp_path):
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good, format="PNG")
    data = bytearray(good.getvalue())
    rng = np.random.default_rng(1)
    for trial in range(40):
        damaged = bytearray(data)
        for index in rng.integers(8, len(damaged), 6):
            damaged[index] = int(rng.integers(0, 256))
        path = tmp_path / f"damaged_{trial}.png"
        path.write_bytes(bytes(damaged[:int(rng.integers(20, len(damaged) + 1))]))
        try:
            image_io.read_image_and_alpha(str(path))
        except image_io.ImageReadError as error:
            assert str(path) in str(error) and not re.search(r"at 0x[0-9a-fA-F]+", str(error))


# --- pixel values and orientation ------------------------------------------------------------------

def test_sixteen_bit_grey_is_scaled_not_clipped_and_stays_sixteen_bit(identity):
    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 32).astype(np.uint16)
    status, body = adapter.handle_deblur({"image": _encoded(Image.fromarray(ramp))})
    assert status == 200
    with _reply(body) as result:
        got = np.asarray(result).astype(np.int64)
    assert result.mode.startswith("I") and np.abs(got - ramp).max() <= 1  # was 91.7 % white, 8 bits


def test_sixteen_bit_decodes_alike_for_the_api_and_the_command_line(tmp_path):
    ramp = (np.arange(256 * 4, dtype=np.uint32).reshape(4, 256) * 64).astype(np.uint16)
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    from_file, mode, _ = image_io.read_image_and_alpha(str(path))
    from_api, api_mode, _ = adapter.decode_image(base64.b64encode(path.read_bytes()).decode())
    assert mode == api_mode and torch.equal(from_file, from_api[0])
    assert torch.allclose(from_file[0], torch.from_numpy(ramp / 65535.0).float(), atol=1e-6)


def _portrait_jpeg() -> bytes:
    """Stored landscape 40x20 with EXIF orientation 6 (rotate 90° clockwise to view): a portrait photo."""
    stored = Image.new("RGB", (40, 20), (0, 0, 0))
    stored.paste((255, 255, 255), (0, 0, 10, 20))  # the stored left edge is the viewed top
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    stored.save(buffer, format="JPEG", exif=exif.tobytes(), quality=95)
    return buffer.getvalue()


def test_exif_orientation_is_applied_by_the_api_and_the_command_line(identity, tmp_path):
    data = _portrait_jpeg()
    status, body = adapter.handle_deblur({"image": base64.b64encode(data).decode()})
    with _reply(body) as result:
        assert status == 200 and result.size == (20, 40)
        viewed = np.asarray(result.convert("L")).astype(int)
    assert viewed[:8].mean() > 200 and viewed[-20:].mean() < 50  # white on top
    path = tmp_path / "portrait.jpg"
    path.write_bytes(data)
    rgb, _, _ = image_io.read_image_and_alpha(str(path))
    assert tuple(rgb.shape) == (3, 40, 20) and rgb[:, :8].mean() > 0.8


# --- base64 and sizes ------------------------------------------------------------------------------

def test_line_wrapped_base64_is_accepted(identity):
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, format="PNG", compress_level=0)
    wrapped = base64.encodebytes(buffer.getvalue()).decode()  # 76 characters a line, as base64 without -w0
    assert "\n" in wrapped
    status, body = adapter.handle_deblur({"image": wrapped})
    assert status == 200, body
    status, _ = adapter.handle_deblur({"image": "data:image/png;base64," + wrapped.replace("\n", "\r\n")})
    assert status == 200


@pytest.mark.parametrize("width, height", [(9000, 8000), (30000, 30000)])
def test_too_many_pixels_is_413_naming_the_limit(width, height):
    status, body = adapter.handle_deblur({"image": base64.b64encode(_png_header(width, height)).decode()})
    assert status == 413 and str(width * height) in body["error"] and str(adapter.MAX_REQUEST_PIXELS) in body["error"]


def test_a_decompression_bomb_file_is_a_named_read_error(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header(30000, 30000))  # over Pillow's bomb limit: refused before anything is decoded
    with pytest.raises(image_io.ImageReadError, match="bomb.png"):
        image_io.read_image_and_alpha(str(path))


# --- memory follows the tile -------------------------------------------------------------------------

class _Host(runtime.Host):
    def __init__(self, free: int):
        self.free = free

    def available_memory(self, device):
        return self.free


@pytest.fixture
def free_memory():
    """``free_memory(n)``: the host reports ``n`` bytes free on every device."""
    previous = runtime.current()
    yield lambda free: runtime.use(_Host(free))
    runtime.use(previous)


def test_the_whole_image_runs_when_it_fits_and_tiles_when_not(free_memory):
    per_pixel = lambda h, w: 1000 * h * w  # noqa: E731
    free_memory(64 << 30)
    assert memory.plan_tile(2048, 2048, 0, per_pixel, torch.device("cpu")) == 0
    free_memory(4 << 30)  # half may be planned: 2 GiB; 2048² needs 4.2 GB + buffers
    assert memory.plan_tile(2048, 2048, 0, per_pixel, torch.device("cpu")) == 1024
    assert memory.plan_tile(2048, 2048, 512, per_pixel, torch.device("cpu")) == 512  # an asked tile that fits stays
    free_memory(200 << 20)
    with pytest.raises(memory.MemoryLimitError, match=r"2048x2048 .*tile_size"):
        memory.plan_tile(2048, 2048, 0, per_pixel, torch.device("cpu"))


def test_the_registry_tiles_what_does_not_fit_and_the_route_says_413(free_memory, models_dir):
    os.symlink(os.path.join(DATA, "hidiff_tiny"), models_dir / "HI_Diff_GoPro")
    photo = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8))
    free_memory(90 << 20)  # 45 MiB may be planned: the whole 300x200 image (~64 MB) nor 256 px tiles, 128 px tiles yes
    status, body = adapter.handle_deblur({"image": _encoded(photo), "model": "HI_Diff_GoPro"})
    assert status == 200 and body["info"]["tile_size"] == 128
    free_memory(4 << 20)
    status, body = adapter.handle_deblur({"image": _encoded(photo), "model": "HI_Diff_GoPro"})
    assert status == 413 and "300x200" in body["error"] and "tile_size" in body["error"]


CHILD = r"""
import base64, io, json, os, resource, sys
sys.path.insert(0, os.path.join(sys.argv[1], "tests"))
import torch
torch.set_num_threads(1)
from conftest import pack_module
from PIL import Image
adapter = pack_module("webui.adapter")
side, headroom = int(sys.argv[2]), int(float(sys.argv[3]) * 2 ** 30)
buffer = io.BytesIO()
Image.new("RGB", (side, side)).save(buffer, format="PNG")
payload = {"image": base64.b64encode(buffer.getvalue()).decode(), "model": "HI_Diff_GoPro"}
size = next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (size + headroom, resource.getrlimit(resource.RLIMIT_AS)[1]))
status, body = adapter.handle_deblur(payload)
print(json.dumps({"status": status, "info": body.get("info"), "error": body.get("error")}))
"""


def _request_under_ceiling(tmp_path, side: int, headroom_gib: float) -> dict:
    """One API request in a child process that may map only ``headroom_gib`` more than it has after start-up."""
    folder = tmp_path / "deblur"
    folder.mkdir()
    os.symlink(os.path.join(DATA, "hidiff_tiny"), folder / "HI_Diff_GoPro")
    env = {**os.environ, "COMFYUI_DEBLUR_MODELS": str(folder), "OMP_NUM_THREADS": "1", "DEBLUR_NO_PROGRESS": "1"}
    done = subprocess.run([sys.executable, "-c", CHILD, ROOT, str(side), str(headroom_gib)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]  # the old code died here: can't allocate memory
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_large_request_under_a_memory_ceiling_runs_in_tiles(tmp_path):
    """4 MP at tile_size 0: whole, the test model needs ~2.6 GB more; under a 1.5 GiB ceiling it goes in tiles."""
    reply = _request_under_ceiling(tmp_path, 2048, 1.5)
    assert reply["status"] == 200 and reply["info"]["tile_size"] in memory.TILES, reply


def test_a_16_megapixel_request_under_a_tight_ceiling_is_413_not_a_crash(tmp_path):
    reply = _request_under_ceiling(tmp_path, 4096, 0.9)
    assert reply["status"] == 413 and "4096x4096" in reply["error"] and "tile_size" in reply["error"], reply
    assert str(adapter.MAX_REQUEST_PIXELS) in reply["error"]


def test_memory_planning_imports_and_answers_without_the_posix_resource_module():
    """Windows has no ``resource`` module: the planner must still import (the whole pack imports it)
    and fall back to the other sources of free memory."""
    code = ("import sys; sys.modules['resource'] = None; sys.path.insert(0, sys.argv[1]); "
            "from conftest import pack_module; memory = pack_module('models.common.memory'); "
            "assert memory.resource is None and memory._rlimit_headroom() is None; "
            "print(memory.cpu_available_bytes() > 0)")
    done = subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "tests")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr[-2000:]
