"""Model listings against hostile model folders: a zip bomb costs no memory, a corrupt or foreign
file is skipped with one log line naming it, symlink loops end, and a listing is cached until a
folder changes (issue 11, findings 2-4 and 6)."""
import logging
import os
import shutil
import struct
import threading
import time
import tracemalloc
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from conftest import DATA, pack_module
from tiny_deblurdiff import micro_state, write_model

dd = pack_module("models.deblurdiff")
hidiff = pack_module("models.hidiff")
discovery = pack_module("models.common.discovery")
checkpoint = pack_module("models.common.checkpoint")
TINY = os.path.join(DATA, "hidiff_tiny")
BOMB_BYTES = 48 * 2**20


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("official") / "model.pth", micro_state(0))


def write_bomb(path):
    """A 'checkpoint' whose data.pkl inflates from ~50 kB to 48 MiB (with the official key names)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"".join(dd.loader.OFFICIAL_MARKERS) + bytes(BOMB_BYTES))
    return path


def write_unsupported_compression(path):
    """A zip whose entry claims a compression method zipfile cannot inflate."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data.pkl", b"x" * 1000)
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = data.find(signature)
        data[at + offset:at + offset + 2] = struct.pack("<H", 99)
    path.write_bytes(bytes(data))
    return path


def listing_with_peak(root):
    tracemalloc.start()
    try:
        names = dd.find_deblurdiff_models(str(root))
        return names, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_zip_bomb_is_skipped_without_inflating_it(tmp_path, official, caplog):
    os.symlink(official, tmp_path / "model.pth")
    write_bomb(tmp_path / "bomb.pth")
    with caplog.at_level(logging.WARNING):
        names, peak = listing_with_peak(tmp_path)
    assert names == ["model.pth"]
    assert peak < 8 * 2**20, f"listing allocated {peak / 2**20:.0f} MiB"
    assert "bomb.pth" in caplog.text and "compressed" in caplog.text
    with pytest.raises(checkpoint.CheckpointError, match="compressed") as error:
        dd.load_deblurdiff(str(tmp_path / "bomb.pth"))
    assert str(tmp_path / "bomb.pth") in str(error.value)


@pytest.mark.parametrize("writer", [write_unsupported_compression,
                                    lambda p: p.write_bytes(open(TINY + "/net_g.pth", "rb").read()[:3000]),
                                    lambda p: p.write_bytes(b"PK\x03\x04" + bytes(200))],
                         ids=["unsupported compression", "truncated", "no directory"])
def test_a_corrupt_checkpoint_never_hides_the_others(tmp_path, official, writer, caplog):
    os.symlink(official, tmp_path / "model.pth")
    writer(tmp_path / "broken.pth")
    with caplog.at_level(logging.WARNING):
        assert dd.find_deblurdiff_models(str(tmp_path)) == ["model.pth"]
    assert caplog.text.count("broken.pth") == 1
    with pytest.raises(checkpoint.CheckpointError) as error:
        dd.load_deblurdiff(str(tmp_path / "broken.pth"))
    assert str(tmp_path / "broken.pth") in str(error.value)


def test_the_loader_node_lists_models_beside_a_corrupt_file(models_dir, official):
    nodes = pack_module("nodes.deblurdiff")
    os.symlink(official, models_dir / "model.pth")
    write_unsupported_compression(models_dir / "zz_broken.pth")
    assert nodes.DeblurDiffLoader.INPUT_TYPES()["required"]["model_name"][0] == ["model.pth"]


def test_symlink_loops_end_and_list_each_model_once(tmp_path):
    shutil.copytree(TINY, tmp_path / "HI_Diff_GoPro")
    os.symlink(".", tmp_path / "loopA")
    os.symlink(".", tmp_path / "loopB")
    os.symlink(str(tmp_path), tmp_path / "HI_Diff_GoPro" / "up")
    result = []
    worker = threading.Thread(target=lambda: result.append(hidiff.find_hidiff_models(str(tmp_path))), daemon=True)
    worker.start()
    worker.join(10)
    assert result, "the listing did not end within 10 s"
    assert result[0] == ["HI_Diff_GoPro"]


@pytest.mark.parametrize("content", [b"<!DOCTYPE html><html>Google Drive: virus scan warning</html>", "truncated"])
def test_an_unreadable_safetensors_is_named_in_the_log(tmp_path, content, caplog):
    path = tmp_path / "mine.safetensors"
    if content == "truncated":
        hidiff.save_hidiff(hidiff.load_hidiff(TINY), str(path))
        path.write_bytes(path.read_bytes()[:-100])
    else:
        path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert hidiff.find_hidiff_models(str(tmp_path)) == []
    assert str(path) in caplog.text
    assert ("truncated" if content == "truncated" else "web page") in caplog.text


def test_a_huge_safetensors_header_is_not_read(tmp_path):
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", 2**40))
        handle.write(b"{" + b" " * 100)
    with pytest.raises(checkpoint.CheckpointError, match=str(path)):
        checkpoint.read_metadata(str(path))


calls = []


def counting_predicate(path):
    calls.append(path)
    return path.endswith(".model")


def test_listings_are_cached_until_a_folder_changes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.model").write_bytes(b"x")
    calls.clear()
    assert discovery.find_models(str(tmp_path), is_model_file=counting_predicate) == ["sub/a.model"]
    first = len(calls)
    assert discovery.find_models(str(tmp_path), is_model_file=counting_predicate) == ["sub/a.model"]
    assert len(calls) == first, "an unchanged folder was classified again"
    time.sleep(0.01)
    (tmp_path / "sub" / "b.model").write_bytes(b"y")
    assert discovery.find_models(str(tmp_path), is_model_file=counting_predicate) == ["sub/a.model", "sub/b.model"]
    assert calls[first:] == [str(tmp_path / "sub" / "b.model")], "only the new file is classified"


def test_depth_and_special_files_are_bounded(tmp_path):
    deep = tmp_path.joinpath(*["d"] * (discovery.MAX_DEPTH + 2))
    deep.mkdir(parents=True)
    (deep / "x.model").write_bytes(b"x")
    (tmp_path / "shallow.model").write_bytes(b"x")
    os.mkfifo(tmp_path / "fifo.model")
    assert discovery.find_models(str(tmp_path), is_model_file=counting_predicate) == ["shallow.model"]


def test_a_file_fixed_in_place_is_listed_without_any_folder_changing(tmp_path, official):
    """A truncated download overwritten in place by a good copy (the folder's time does not change)."""
    target = tmp_path / "model.pth"
    target.write_bytes(open(official, "rb").read()[:5000])
    assert dd.find_deblurdiff_models(str(tmp_path)) == []
    folder_time = os.stat(tmp_path).st_mtime_ns
    with open(target, "r+b") as handle:
        handle.write(open(official, "rb").read())
    os.utime(tmp_path, ns=(folder_time, folder_time))
    assert dd.find_deblurdiff_models(str(tmp_path)) == ["model.pth"]
    assert hidiff.find_hidiff_models(str(tmp_path)) == []  # another kind's listing of the same folder
    assert dd.find_deblurdiff_models(str(tmp_path)) == ["model.pth"]
