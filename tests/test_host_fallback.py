"""nodes/host.py outside ComfyUI: the fallbacks tests, tools and the CLI rely on."""
import os

import pytest
import torch

from conftest import DATA, pack_module

host = pack_module("nodes.host")
nodes = pack_module("nodes.hidiff")
runtime = pack_module("models.common.runtime")


def test_outside_comfyui_everything_falls_back():
    assert not host.IN_COMFYUI
    assert host.torch_device().type in ("cpu", "cuda", "mps")
    assert host.output_device() == torch.device("cpu")
    host.check_interrupt()  # no host: never interrupted
    host.free_memory(1 << 40, torch.device("cpu"))  # no host: nothing to unload


def test_model_folders_come_from_the_environment(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    (second / "HI_Diff_GoPro").mkdir(parents=True)
    monkeypatch.setenv(host.ENV_MODELS, os.pathsep.join([str(first), str(second)]))
    assert host.model_dirs() == [str(first), str(second)]
    assert host.resolve_model("HI_Diff_GoPro") == str(second / "HI_Diff_GoPro")
    with pytest.raises(FileNotFoundError, match="models/deblur"):
        host.resolve_model("missing")


def test_cancel_between_steps_stops_the_node(models_dir, monkeypatch):
    os.symlink(os.path.join(DATA, "hidiff_tiny"), models_dir / "HI_Diff_GoPro")
    (model,) = nodes.HIDiffLoader().load("HI_Diff_GoPro")
    calls = []

    class Interrupted(Exception):
        pass

    class CancelOnThirdStep(runtime.Host):  # a host whose user presses Cancel during the third step
        def check_interrupt(self):
            calls.append(1)
            if len(calls) == 3:
                raise Interrupted

    previous = runtime.use(CancelOnThirdStep())
    try:
        with pytest.raises(Interrupted):
            nodes.HIDiffDeblur().deblur(model, torch.rand(1, 16, 16, 3), 0)
    finally:
        runtime.use(previous)
    assert len(calls) == 3
    assert next(model.model.parameters()).device == host.offload_device()  # offloaded even when cancelled


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_half_precision_stays_close_to_fp32(models_dir, precision):
    os.symlink(os.path.join(DATA, "hidiff_tiny"), models_dir / "HI_Diff_GoPro")
    image = torch.rand(1, 24, 24, 3, generator=torch.Generator().manual_seed(0))
    (full,) = nodes.HIDiffLoader().load("HI_Diff_GoPro", "fp32")
    (half,) = nodes.HIDiffLoader().load("HI_Diff_GoPro", precision)
    assert half.model.restore_dtype == host.PRECISIONS[precision]
    assert half.model.net_d.time_mlp.dtype == torch.float32  # the prior stays fp32
    (a,) = nodes.HIDiffDeblur().deblur(full, image, 1)
    (b,) = nodes.HIDiffDeblur().deblur(half, image, 1)
    assert b.dtype == torch.float32 and (a - b).abs().max() < 0.05


@pytest.mark.parametrize("node", ["deblur", "restore"])
def test_cancel_reaches_inside_the_restoration_pass(models_dir, monkeypatch, node):
    """A whole large image spends seconds in one restoration pass: Cancel is checked between its
    transformer blocks, so the pass stops before its output layer, and the model is offloaded."""
    os.symlink(os.path.join(DATA, "hidiff_tiny"), models_dir / "HI_Diff_GoPro")
    (model,) = nodes.HIDiffLoader().load("HI_Diff_GoPro")
    net_g = model.model.net_g
    events = []
    hooks = [net_g.register_forward_pre_hook(lambda *_: events.append("restoring")),
             net_g.output.register_forward_hook(lambda *_: events.append("finished"))]

    class Interrupted(Exception):
        pass

    def interrupt_once_restoring():
        if "restoring" in events:
            raise Interrupted

    monkeypatch.setattr(host, "check_interrupt", interrupt_once_restoring)
    image = torch.rand(1, 16, 16, 3)
    try:
        with pytest.raises(Interrupted):
            if node == "deblur":
                nodes.HIDiffDeblur().deblur(model, image, 0)
            else:
                nodes.HIDiffRestore().restore(model, image, torch.zeros(1, *model.model.prior_shape))
    finally:
        for hook in hooks:
            hook.remove()
    assert "finished" not in events, "the restoration pass ran to its end before Cancel was seen"
    assert next(model.model.parameters()).device == host.offload_device()


def test_base_model_folders_standalone(tmp_path, monkeypatch):
    runtime = pack_module("models.common.runtime")
    monkeypatch.setenv(host.ENV_MODELS, str(tmp_path / "models" / "deblur"))
    monkeypatch.delenv("COMFYUI_DEBLUR_CHECKPOINTS", raising=False)
    assert runtime.host_model_dirs("checkpoints") == [str(tmp_path / "models" / "checkpoints")]  # ComfyUI's layout
    monkeypatch.setenv("COMFYUI_DEBLUR_CHECKPOINTS", os.pathsep.join(["/a", "/b"]))
    assert runtime.host_model_dirs("checkpoints") == ["/a", "/b"]
