"""Hostile model files (issue 20): each is refused with a CheckpointError naming the file and the
tensor, before a network is sized from it, and within a memory ceiling.

Every load runs in a child process under an address-space limit (``memory_limit.run_limited``), so a
regression fails the test (an allocation error instead of the named one) instead of exhausting the
machine. The hostile files are
the bundled models and the tests' tiny models with one entry of their safetensors header edited.
"""
from __future__ import annotations

import json
import os
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import pack_module
from memory_limit import run_limited

checkpoint = pack_module("models.common.checkpoint")
hidiff_default = pack_module("models.hidiff.default_model")
estimator_model = pack_module("models.fidediff.estimator_model")

def assert_refused(result: dict, path, *words: str) -> None:
    assert result["error"] == "CheckpointError", result
    assert os.fspath(path) in result["message"], result
    for word in words:
        assert word in result["message"], result


def read_header(path) -> tuple[dict, bytes]:
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length)), handle.read()


def write_header(path, header: dict, data: bytes) -> None:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text + data)


def edited(source, target, edit) -> str:
    """``source`` with ``edit(header)`` applied to its header, the tensor bytes unchanged."""
    header, data = read_header(source)
    edit(header)
    write_header(target, header, data)
    return os.fspath(target)


def with_tensor(source, target, key: str, tensor: torch.Tensor) -> str:
    """``source`` with one tensor replaced (e.g. by an empty one that declares a huge dimension)."""
    state = load_file(source)
    assert key in state
    state[key] = tensor
    save_file(state, os.fspath(target), metadata=read_header(source)[0].get("__metadata__"))
    return os.fspath(target)


def relabel(key: str, dtype: str):
    def edit(header):
        assert header[key]["dtype"] == "F32"
        header[key]["dtype"] = dtype  # same bytes per element: the file's size does not change
    return edit


# -- HI-Diff, the bundled compact model ------------------------------------------------------------

HIDIFF_KEY = "net_g.patch_embed.proj.weight"  # [48, 3, 3, 3]: its first size is the transformer's width


def test_hidiff_tensor_with_an_empty_dimension_is_refused_before_the_network_is_built(tmp_path):
    path = with_tensor(hidiff_default.DEFAULT_PATH, tmp_path / "empty_dim.safetensors", HIDIFF_KEY,
                       torch.empty(2000, 3, 0, 3))
    result = run_limited("models.hidiff.loader", "load_hidiff", path)
    assert_refused(result, path, "patch_embed.proj.weight", "empty dimension")


def test_hidiff_float_weights_relabelled_as_integers_are_refused(tmp_path):
    path = edited(hidiff_default.DEFAULT_PATH, tmp_path / "relabelled.safetensors", relabel(HIDIFF_KEY, "I32"))
    assert read_header(path)[1] == read_header(hidiff_default.DEFAULT_PATH)[1]  # the same tensor bytes
    result = run_limited("models.hidiff.loader", "load_hidiff", path)
    assert_refused(result, path, "patch_embed.proj.weight", "int32")


def test_hidiff_tensor_declaring_more_bytes_than_it_holds_is_named(tmp_path):
    def grow(header):
        header[HIDIFF_KEY]["shape"] = [48000, 3, 3, 3]  # its data span still holds 48 x 27 floats
    path = edited(hidiff_default.DEFAULT_PATH, tmp_path / "grown.safetensors", grow)
    result = run_limited("models.hidiff.loader", "load_hidiff", path)
    assert_refused(result, path, "patch_embed.proj.weight", "bytes")


def test_hidiff_bundled_model_loads_under_the_same_ceiling():
    result = run_limited("models.hidiff.loader", "load_hidiff", hidiff_default.DEFAULT_PATH)
    assert result["error"] is None, result


# -- the FideDiff kernel estimator ----------------------------------------------------------------

ESTIMATOR_KEY = "estimator.stem.weight"  # [16, 3, 3, 3]: the first level's width


def test_estimator_tensor_with_an_empty_dimension_is_refused(tmp_path):
    path = with_tensor(estimator_model.DEFAULT_PATH, tmp_path / "empty_dim.safetensors", ESTIMATOR_KEY,
                       torch.empty(100_000, 3, 0, 3))
    result = run_limited("models.fidediff.estimator_model", "load_blur_estimator", path)
    assert_refused(result, path, "stem.weight", "empty dimension")


def test_estimator_float_weights_relabelled_as_integers_are_refused(tmp_path):
    path = edited(estimator_model.DEFAULT_PATH, tmp_path / "relabelled.safetensors", relabel(ESTIMATOR_KEY, "I32"))
    result = run_limited("models.fidediff.estimator_model", "load_blur_estimator", path)
    assert_refused(result, path, "stem.weight", "int32")


def test_estimator_kernel_size_beyond_the_architecture_is_refused(tmp_path):
    # A consistent file (the bytes are there) whose basis head makes 67x67 kernels (above the bound of 65).
    state = load_file(estimator_model.DEFAULT_PATH)
    basis, width = state["estimator.mix_head.weight"].shape[0], state["estimator.basis_head.2.weight"].shape[1]
    state["estimator.basis_head.2.weight"] = torch.zeros(basis * 67 * 67, width)
    state["estimator.basis_head.2.bias"] = torch.zeros(basis * 67 * 67)
    path = os.fspath(tmp_path / "big_kernels.safetensors")
    save_file(state, path, metadata=read_header(estimator_model.DEFAULT_PATH)[0]["__metadata__"])
    result = run_limited("models.fidediff.estimator_model", "load_blur_estimator", path)
    assert_refused(result, path, "kernel size = 67")


def test_estimator_listing_reads_a_huge_header_through_the_bounded_reader(tmp_path):
    """A 95 MB header (valid JSON, naming both parts) is skipped without being read (safetensors'
    own reader parses it, 0.9 GiB and seconds, and lists the file)."""
    folder = tmp_path / "deblur"
    folder.mkdir()
    good = folder / "bundled_copy.safetensors"
    good.write_bytes(open(estimator_model.DEFAULT_PATH, "rb").read())
    entry = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}
    head = json.dumps({"estimator.stem.weight": entry, "regressor.inp.weight": dict(entry, data_offsets=[4, 8]),
                       "__metadata__": {"pad": ""}})[:-3].encode()  # ..."pad": "  then the padding, then "}}
    pad = 95 * 2**20
    with open(folder / "huge_header.safetensors", "wb") as handle:
        handle.write(struct.pack("<Q", len(head) + pad + 3) + head)
        for _ in range(95):
            handle.write(b"x" * 2**20)
        handle.write(b'"}}' + bytes(8))
    result = run_limited("models.fidediff.estimator_model", "find_estimator_models", folder)
    assert result["error"] is None and result["value"] == ["bundled_copy.safetensors"], result
    assert result["peak_rise"] < 64 * 2**20, result


# -- LoRA ranks, the FideDiff adapter and the OSDD file ---------------------------------------------


@pytest.fixture(scope="module")
def tiny_base_file(tmp_path_factory):
    from tiny_sd import write_single_file

    return write_single_file(tmp_path_factory.mktemp("base") / "tiny_base.safetensors")


def first_lora_down(header: dict, prefix: str) -> str:
    return next(k for k in sorted(header) if k.startswith(prefix) and k.endswith(".lora_down.weight"))


def test_fidediff_adapter_lora_rank_from_an_empty_tensor_is_refused(tmp_path, tiny_base_file):
    from tiny_fidediff import write_adapter

    adapter = write_adapter(tmp_path / "adapter.safetensors", tiny_base_file)
    key = first_lora_down(read_header(adapter)[0], "lora.")
    path = with_tensor(adapter, tmp_path / "rank.safetensors", key, torch.empty(2**24, 0))
    result = run_limited("models.fidediff.adapter", "load_fidediff", tiny_base_file, path)
    assert_refused(result, path, key, "empty dimension")


def test_osdd_lora_and_gate_from_hostile_shapes_are_refused(tmp_path, tiny_base_file):
    from tiny_osdd import write_tiny_osdd

    weights = write_tiny_osdd(tmp_path / "osdd.safetensors", tiny_base_file)
    key = first_lora_down(read_header(weights)[0], "unet_lora.real.")
    path = with_tensor(weights, tmp_path / "rank.safetensors", key, torch.empty(2**24, 0))
    assert_refused(run_limited("models.osdd.weights", "read_osdd", path), path, key, "empty dimension")
    path = edited(weights, tmp_path / "gate.safetensors", relabel("gate.net.0.weight", "I32"))
    assert_refused(run_limited("models.osdd.weights", "read_osdd", path), path, "gate.net.0.weight", "int32")


def test_lora_rank_is_checked_against_the_layer_before_an_adapter_is_allocated():
    lora = pack_module("models.sd21.lora")
    layer = torch.nn.Linear(32, 48)
    model = torch.nn.Sequential(layer)
    for down, up, words in (
        (torch.zeros(2000, 32), torch.zeros(48, 2000), "rank 2000, outside 1..1024"),
        (torch.zeros(4, 32), torch.zeros(48, 5), "the layer needs (48, 4)"),
        (torch.zeros(4, 31), torch.zeros(48, 4), "the layer needs (4, 32)"),
        (torch.zeros(4, 32, dtype=torch.int32), torch.zeros(48, 4), "int32"),
    ):
        with pytest.raises(checkpoint.CheckpointError, match=words.replace("(", r"\(").replace(")", r"\)")) as caught:
            lora.load_adapter(model, {"0.lora_down.weight": down, "0.lora_up.weight": up}, "x", "file.safetensors")
        assert "file.safetensors" in str(caught.value) and "'0'" in str(caught.value)
        assert isinstance(model[0], torch.nn.Linear) or not model[0].adapters  # nothing was allocated
    with pytest.raises(checkpoint.CheckpointError, match="alpha"):
        lora.load_adapter(model, {"0.lora_down.weight": torch.zeros(4, 32), "0.lora_up.weight": torch.zeros(48, 4),
                                  "0.alpha": torch.tensor(float("inf"))}, "x", "file.safetensors")


# -- DeblurDiff ------------------------------------------------------------------------------------


def test_deblurdiff_pack_file_with_integer_weights_is_refused(tmp_path):
    from tiny_deblurdiff import micro_state

    loader = pack_module("models.deblurdiff.loader")
    source = tmp_path / "model.pth"
    torch.save(micro_state(0), source)
    model = loader.load_deblurdiff(str(source))
    pack = os.fspath(tmp_path / "deblurdiff.safetensors")
    loader.save_deblurdiff(model, pack)
    key = next(k for k in sorted(read_header(pack)[0]) if k.startswith("unet.") and k.endswith(".weight"))
    path = edited(pack, tmp_path / "relabelled.safetensors", relabel(key, "I32"))
    assert_refused(run_limited("models.deblurdiff.loader", "load_deblurdiff", path), path, key, "int32")
    path = with_tensor(pack, tmp_path / "empty.safetensors", key, torch.empty(70_000, 0))
    assert_refused(run_limited("models.deblurdiff.loader", "load_deblurdiff", path), path, key, "empty dimension")


# -- the header reader itself ----------------------------------------------------------------------


@pytest.mark.parametrize("edit, words", [
    (lambda h: h[HIDIFF_KEY].update(dtype="F33"), "unknown dtype"),
    (lambda h: h[HIDIFF_KEY].update(shape=[48, 3, -3, 3]), "unreadable shape"),
    (lambda h: h[HIDIFF_KEY].update(shape=[2] * 40), "unreadable shape"),
    (lambda h: h[HIDIFF_KEY].update(data_offsets=[10, 5]), "bad data offsets"),
    (lambda h: h[HIDIFF_KEY].update(shape=[48, 3, 3, 4]), "bytes"),
])
def test_safetensors_header_names_the_bad_tensor(tmp_path, edit, words):
    path = edited(hidiff_default.DEFAULT_PATH, tmp_path / "bad.safetensors", edit)
    with pytest.raises(checkpoint.CheckpointError, match=words) as caught:
        checkpoint.safetensors_header(path)
    assert HIDIFF_KEY in str(caught.value) and path in str(caught.value)
