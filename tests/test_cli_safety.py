"""tools/deblur.py never destroys a file and never stalls (issue 11, findings 1 and 8; issue 10, item 5):
outputs compare as files with the inputs (links, hard links), nothing is replaced without --overwrite,
writes go through a temporary file, option errors come before the model loads, only regular image
files are read, 16-bit grey stays right, and each failure is one line."""
import os
import sys
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import DATA, ROOT

sys.path.insert(0, os.path.join(ROOT, "tools"))
import deblur  # noqa: E402

hidiff = deblur.pack_module("models.hidiff")  # the tool's own copy of the pack


@pytest.fixture
def identity_model(monkeypatch, tmp_path):
    """The tiny HI-Diff folder as the model, with deblurring replaced by the identity, so outputs
    show exactly what the reader read and the writer wrote."""
    monkeypatch.setattr(hidiff, "deblur", lambda model, images, *a, **k: images.clone())
    return os.path.join(DATA, "hidiff_tiny")


def photo(path, seed=0, size=(20, 16)):
    array = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def run(*args):
    return deblur.main([*map(str, args)])


def test_an_out_folder_linked_to_the_inputs_folder_never_overwrites_an_input(tmp_path, identity_model):
    real = tmp_path / "real"
    real.mkdir()
    original = photo(real / "in.png").read_bytes()
    os.symlink(real, tmp_path / "alias")
    assert run(real / "in.png", "--out", tmp_path / "alias", "--model", identity_model) == 0
    assert (real / "in.png").read_bytes() == original
    assert (real / "in_2.png").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_links_in_the_out_folder_to_an_input_are_neither_followed_nor_replaced(tmp_path, identity_model, overwrite):
    photo(tmp_path / "in.png")
    original = (tmp_path / "in.png").read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(tmp_path / "in.png", out / "in.png")
    os.link(tmp_path / "in.png", out / "in_2.png")
    assert run(tmp_path / "in.png", "--out", out, "--model", identity_model, *(["--overwrite"] if overwrite else [])) == 0
    assert (tmp_path / "in.png").read_bytes() == original
    assert os.path.islink(out / "in.png") and (out / "in_2.png").read_bytes() == original
    assert (out / "in_3.png").exists()


def test_an_existing_unrelated_file_is_kept_unless_overwrite(tmp_path, identity_model):
    photo(tmp_path / "in.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "in.png").write_bytes(b"someone's file")
    assert run(tmp_path / "in.png", "--out", out, "--model", identity_model) == 0
    assert (out / "in.png").read_bytes() == b"someone's file" and (out / "in_2.png").exists()
    assert run(tmp_path / "in.png", "--out", out, "--model", identity_model, "--overwrite") == 0
    with Image.open(out / "in.png") as replaced, Image.open(tmp_path / "in.png") as source:
        assert np.array_equal(np.asarray(replaced), np.asarray(source))
    assert sorted(os.listdir(out)) == ["in.png", "in_2.png"], "no temporary file is left behind"


def test_an_interrupted_write_leaves_no_half_image(tmp_path, identity_model, monkeypatch):
    photo(tmp_path / "in.png")

    class Cut:
        def save(self, stream, format=None):
            stream.write(b"\x89PNG half")
            raise KeyboardInterrupt

    monkeypatch.setattr(deblur, "to_picture", lambda *a: Cut())
    assert run(tmp_path / "in.png", "--model", identity_model) == deblur.INTERRUPTED  # Ctrl-C: a summary, exit 130
    assert sorted(os.listdir(tmp_path)) == ["in.png"]


def test_a_failing_folder_is_one_line_and_the_batch_goes_on(tmp_path, identity_model, monkeypatch, capsys):
    good, locked = tmp_path / "good", tmp_path / "locked"
    good.mkdir()
    locked.mkdir()
    photo(good / "a.png")
    photo(locked / "b.png")
    real_mkstemp = deblur.tempfile.mkstemp

    def mkstemp(dir=None, **kwargs):
        if os.path.samefile(dir, locked):
            raise PermissionError(13, "Permission denied", str(locked))
        return real_mkstemp(dir=dir, **kwargs)

    monkeypatch.setattr(deblur.tempfile, "mkstemp", mkstemp)
    assert run(locked / "b.png", good / "a.png", "--model", identity_model) == 1
    err = capsys.readouterr()
    assert f"failed {locked / 'b.png'}: Permission denied" in err.out + err.err
    assert "Traceback" not in err.out + err.err
    assert (good / "a_deblurred.png").exists()


@pytest.mark.parametrize("case", ["out is a file", "out is read-only", "overlap beyond the auto tile", "negative overlap", "bad tile"])
def test_option_errors_come_before_the_model_loads(tmp_path, monkeypatch, capsys, case):
    photo(tmp_path / "in.png")
    (tmp_path / "file").write_bytes(b"x")
    monkeypatch.setattr(deblur, "load_model", lambda *a: pytest.fail("the model was loaded"))
    if case == "out is read-only":  # simulated: the tests may run as root, who may write anywhere
        monkeypatch.setattr(deblur.os, "access", lambda path, mode: not os.path.samefile(path, tmp_path))
    options = {"out is a file": ["--out", tmp_path / "file"], "out is read-only": ["--out", tmp_path],
               "overlap beyond the auto tile": ["--overlap", 600],
               "negative overlap": ["--overlap", -1], "bad tile": ["--tile", "big"]}[case]
    assert run(tmp_path / "in.png", *options) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_a_fifo_named_like_an_image_never_blocks(tmp_path, identity_model, capsys):
    photo(tmp_path / "a.png")
    os.mkfifo(tmp_path / "pipe.png")
    statuses = []
    worker = threading.Thread(target=lambda: statuses.append(run(tmp_path, "--model", identity_model)), daemon=True)
    worker.start()
    worker.join(20)
    assert statuses == [0], "the folder run blocked or failed"
    worker = threading.Thread(target=lambda: statuses.append(run(tmp_path / "pipe.png", "--model", identity_model)), daemon=True)
    worker.start()
    worker.join(20)
    assert statuses[1:] == [1], "a FIFO named explicitly is reported as a failure"
    assert "not a regular file" in capsys.readouterr().out


def test_sixteen_bit_grey_comes_back_as_it_went_in(tmp_path, identity_model):
    ramp = (np.linspace(0, 65535, 24 * 16).reshape(16, 24)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert run(tmp_path / "deep.png", "--model", identity_model) == 0
    with Image.open(tmp_path / "deep_deblurred.png") as out:
        assert out.mode in ("I;16", "I")
        values = np.asarray(out, dtype=np.int64)
    assert np.abs(values - ramp).max() <= 1


def test_a_bad_checkpoint_is_one_line(tmp_path, capsys):
    photo(tmp_path / "in.png")
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"<!DOCTYPE html><html>quota exceeded</html>")
    with pytest.raises(SystemExit) as stop:
        run(tmp_path / "in.png", "--model", bad)
    assert str(stop.value).startswith(f"error: {bad}: ") and "\n" not in str(stop.value)


def test_shell_expanded_folder_contents_leave_non_images_alone(tmp_path, identity_model, capsys):
    """``tools/deblur.py example_images/*``: the shell names README.md too; it is not a failed image."""
    photo(tmp_path / "a.png")
    (tmp_path / "README.md").write_text("# photos")
    (tmp_path / "LICENSE").write_text("CC0")
    assert run(tmp_path / "a.png", tmp_path / "README.md", tmp_path / "LICENSE", "--model", identity_model) == 0
    err = capsys.readouterr().err
    assert "left out" in err and "README.md" in err and (tmp_path / "a_deblurred.png").exists()
    assert run(tmp_path / "*", "--model", identity_model, "--suffix", "_again") == 0


def test_named_images_that_cannot_be_read_still_fail(tmp_path, identity_model):
    photo(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    assert run(tmp_path / "a.png", tmp_path / "b.jpg", "--model", identity_model) == 1
    assert run(tmp_path / "a.png", tmp_path / "missing.png", "--model", identity_model) == 1


def _bomb_png(path, side=30000):
    """A PNG whose header declares side x side RGB pixels, with a tiny IDAT: a decompression bomb."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def _limited_cli(args, headroom=3 * 2**30):
    """tools/deblur.py in a child process under umask 022 and an address-space ceiling (a few GiB above
    what torch needs), so a bomb that is decoded fails the test instead of exhausting the machine."""
    import resource
    import subprocess

    def limits():
        os.umask(0o022)
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30 + headroom, 6 * 2**30 + headroom))

    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", "deblur.py"), *map(str, args)], capture_output=True,
                          text=True, timeout=600, preexec_fn=limits, env=env)


def test_a_bomb_and_a_corrupt_tiff_are_one_line_each_and_the_batch_goes_on_with_readable_outputs(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    photo(folder / "a_good.png")
    _bomb_png(folder / "b_bomb.png")
    tiff = folder / "c_corrupt.tif"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tiff)
    data = bytearray(tiff.read_bytes())
    tags = [data.find(bytes([0x00, 0x01, kind, 0x00])) for kind in (3, 4)]  # ImageWidth as SHORT or LONG (little-endian)
    width_tag = max(tags)
    assert width_tag > 0
    data[width_tag + 8:width_tag + 12] = b"\xff\xff\xff\x7f"[:2 if tags[0] > 0 else 4].ljust(4, b"\0")
    tiff.write_bytes(bytes(data))
    out = tmp_path / "out"
    done = _limited_cli([folder, "--model", os.path.join(DATA, "hidiff_tiny"), "--out", out])
    assert "Traceback" not in done.stderr, done.stderr
    named = [line for line in (done.stdout + done.stderr).splitlines() if "b_bomb.png" in line or "c_corrupt.tif" in line]
    assert len([l for l in named if "b_bomb.png" in l]) == 1 and len([l for l in named if "c_corrupt.tif" in l]) == 1, named
    written = out / "a_good.png"
    assert written.is_file()
    assert written.stat().st_mode & 0o777 == 0o644  # the umask's mode, not mkstemp's 0600
