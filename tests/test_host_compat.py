"""nodes/host.py against fake ComfyUI modules of each kind: 0.3.64 (``OOM_EXCEPTION``, plain ``free_memory``)
and the newest host (``is_oom``, dynamic VRAM with ``free_memory(..., for_dynamic=...)``).

The real newest host cannot be run here, so each fake carries only what the pack calls, with the newest
host's signatures and rules (read from its ``comfy/model_management.py``)."""
from __future__ import annotations

import importlib.util
import os
import re
import sys
import types

import pytest
import torch

from conftest import DATA, PACK_NAME, ROOT, pack_module

runtime = pack_module("models.common.runtime")
hidiff_nodes = pack_module("nodes.hidiff")
methods = pack_module("models.methods")

CPU = torch.device("cpu")


class FakeModelManagement(types.ModuleType):
    """What the pack calls of ``comfy.model_management``, on the CPU, recording memory requests."""

    def __init__(self):
        super().__init__("comfy.model_management")
        self.freed, self.interrupted = [], False
        self.OOM_EXCEPTION = torch.cuda.OutOfMemoryError
        self.get_torch_device = self.unet_offload_device = self.intermediate_device = lambda: CPU
        self.should_use_fp16 = self.should_use_bf16 = lambda *args, **kwargs: True
        self.soft_empty_cache = lambda *args, **kwargs: None
        self.throw_exception_if_processing_interrupted = lambda: None

    def free_memory(self, memory_required, device, keep_loaded=[]):  # 0.3.64's signature
        self.freed.append((memory_required, device, {}))


class NewestModelManagement(FakeModelManagement):
    """The newest host: ``is_oom`` (also an accelerator error that says out of memory, whose pending error
    it clears) and ``free_memory`` that leaves dynamic models alone when asked ``for_dynamic``."""

    def __init__(self):
        super().__init__()
        self.discarded = 0

    def is_oom(self, error):
        if isinstance(error, self.OOM_EXCEPTION):
            return True
        if isinstance(error, torch.AcceleratorError) and (getattr(error, "error_code", None) == 2 or "out of memory" in str(error).lower()):
            self.discarded += 1
            return True
        return False

    def free_memory(self, memory_required, device, keep_loaded=[], for_dynamic=False, pins_required=0, ram_required=0):
        self.freed.append((memory_required, device, {"for_dynamic": for_dynamic}))


def _module(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    return module


@pytest.fixture
def load_host(monkeypatch, tmp_path):
    """``load_host(mm, aimdo)`` imports nodes/host.py as ComfyUI would, with ``mm`` as comfy.model_management
    and, where ``aimdo`` is not None, a ``comfy.memory_management`` whose ``aimdo_enabled`` is ``aimdo``;
    the pack's host goes back to what it was afterwards."""
    previous = runtime.current()
    monkeypatch.setenv("COMFYUI_DEBLUR_NO_EXAMPLES", "1")

    def load(mm, aimdo=None):
        comfy = _module("comfy", model_management=mm)
        monkeypatch.setitem(sys.modules, "comfy", comfy)
        monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
        monkeypatch.setitem(sys.modules, "comfy.utils", _module("comfy.utils", ProgressBar=lambda total: types.SimpleNamespace(update=lambda n: None)))
        monkeypatch.setitem(sys.modules, "folder_paths", _module(
            "folder_paths", models_dir=str(tmp_path), add_model_folder_path=lambda *args, **kwargs: None,
            get_folder_paths=lambda kind: [str(tmp_path / "models" / kind)]))
        memory = None if aimdo is None else _module("comfy.memory_management", aimdo_enabled=aimdo)
        monkeypatch.setitem(sys.modules, "comfy.memory_management", memory)  # None: ImportError, as on 0.3.64
        name = f"{PACK_NAME}.nodes._host_in_fake_comfyui"
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "nodes", "host.py"))
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        assert module.IN_COMFYUI and isinstance(runtime.current(), module.ComfyHost)
        return module

    yield load
    runtime.use(previous)


def _cuda_error(message):
    return torch.AcceleratorError(message)


def test_old_host_knows_out_of_memory_by_its_oom_exception(load_host):
    load_host(FakeModelManagement())
    assert runtime.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not runtime.is_out_of_memory(_cuda_error("CUDA error: out of memory"))  # 0.3.64 does not know it either
    assert not runtime.is_out_of_memory(RuntimeError("shapes do not match"))


def test_newest_host_knows_out_of_memory_by_is_oom(load_host):
    mm = NewestModelManagement()
    load_host(mm, aimdo=True)
    assert runtime.is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert runtime.is_out_of_memory(_cuda_error("CUDA error: out of memory"))
    assert mm.discarded == 1  # the host cleared the pending accelerator error
    assert not runtime.is_out_of_memory(_cuda_error("CUDA error: an illegal memory access was encountered"))
    assert not runtime.is_out_of_memory(ValueError("bad input"))


def test_standalone_knows_torchs_out_of_memory():
    assert runtime.Host().is_out_of_memory(torch.cuda.OutOfMemoryError("out of memory"))
    assert not runtime.Host().is_out_of_memory(RuntimeError("out of range"))


@pytest.fixture
def hidiff(models_dir):
    os.symlink(os.path.join(DATA, "hidiff_tiny"), models_dir / "HI_Diff_GoPro")
    return hidiff_nodes.HIDiffLoader().load("HI_Diff_GoPro", "fp32")[0]


def _flaky_deblur(monkeypatch, error, tiles):
    real = hidiff_nodes.deblur

    def deblur(net, rgb, seed, tile, *args):
        tiles.append(tile)
        if tile == 0:
            raise error
        return real(net, rgb, seed, tile, *args)

    monkeypatch.setattr(hidiff_nodes, "deblur", deblur)


@pytest.mark.parametrize("kind", ["oom_exception", "accelerator_error"])
def test_newest_host_node_retries_in_tiles_on_either_kind(load_host, hidiff, monkeypatch, kind):
    load_host(NewestModelManagement(), aimdo=True)
    error = torch.cuda.OutOfMemoryError("CUDA out of memory") if kind == "oom_exception" else _cuda_error("CUDA error: out of memory")
    tiles = []
    _flaky_deblur(monkeypatch, error, tiles)
    (out,) = hidiff_nodes.HIDiffDeblur().deblur(hidiff, torch.rand(1, 20, 24, 3), 1)
    assert tiles == [0, 512] and out.shape == (1, 20, 24, 3)


def test_old_host_node_does_not_retry_other_errors(load_host, hidiff, monkeypatch):
    load_host(FakeModelManagement())
    tiles = []
    _flaky_deblur(monkeypatch, _cuda_error("CUDA error: out of memory"), tiles)
    with pytest.raises(torch.AcceleratorError):  # not out of memory to 0.3.64: reported as it is
        hidiff_nodes.HIDiffDeblur().deblur(hidiff, torch.rand(1, 20, 24, 3), 1)
    assert tiles == [0]


def test_webui_method_runner_retries_on_the_newest_hosts_kind(load_host, hidiff, monkeypatch):
    load_host(NewestModelManagement(), aimdo=True)
    tiles, run = [], methods.HIDIFF.run

    def run_within_memory(model, rgb, settings, device, on_step):
        tiles.append(settings.tile_size)
        if settings.tile_size == 0:
            raise _cuda_error("CUDA error: out of memory")
        return run(model, rgb, settings, device, on_step)

    from dataclasses import replace

    monkeypatch.setattr(methods, "HIDIFF", replace(methods.HIDIFF, run=run_within_memory))
    out, info = methods.deblur_image(methods.HIDIFF, "HI_Diff_GoPro", torch.rand(1, 3, 20, 24), methods.Settings(seed=1))
    assert tiles == [0, 512] and info["tile_size"] == 512


def test_every_retry_path_asks_the_one_predicate():
    """Each "out of memory; retrying" site decides with is_out_of_memory (no exception-type tuples left)."""
    sites = 0
    for folder in ("nodes", "models", "webui"):
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                text = open(os.path.join(directory, name), encoding="utf-8").read()
                assert "oom_errors" not in text, name
                for match in re.finditer(r"out of memory; retrying", text):
                    handler = text[text.rfind("except", 0, match.start()):match.start()]
                    assert "is_out_of_memory(error)" in handler, f"{name}: a retry without is_out_of_memory"
                    sites += 1
    assert sites >= 5


def test_old_host_free_memory_unchanged(load_host):
    mm = FakeModelManagement()
    load_host(mm, aimdo=None)
    runtime.free_memory(1000, CPU)
    assert mm.freed == [(1000, CPU, {})]


@pytest.mark.parametrize("aimdo", [True, False])
def test_newest_host_frees_for_dynamic_only_with_dynamic_vram(load_host, aimdo):
    """With dynamic VRAM the allocator evicts the user's models' weights on demand: the request is marked
    ``for_dynamic`` so the host unloads only models it cannot evict. Without it, the host's old request."""
    mm = NewestModelManagement()
    host = load_host(mm, aimdo=aimdo)
    assert runtime.current().dynamic_vram() is aimdo and host.IN_COMFYUI
    runtime.free_memory(1000, CPU)
    assert mm.freed == [(1000, CPU, {"for_dynamic": aimdo})]


def test_dynamic_vram_switch_without_the_new_signature_keeps_the_old_request(load_host):
    """A host with the switch but a free_memory that does not take ``for_dynamic`` is asked the old way."""
    mm = FakeModelManagement()
    load_host(mm, aimdo=True)
    assert not runtime.current().dynamic_vram()
    runtime.free_memory(5, CPU)
    assert mm.freed == [(5, CPU, {})]


def test_a_node_run_on_the_newest_host_requests_memory_for_dynamic(load_host, hidiff):
    mm = NewestModelManagement()
    load_host(mm, aimdo=True)
    hidiff_nodes.HIDiffDeblur().deblur(hidiff, torch.rand(1, 16, 16, 3), 1)
    assert mm.freed and all(kwargs == {"for_dynamic": True} for _, _, kwargs in mm.freed)
