"""Loading DeblurDiff: the official layout (reduced sizes read from shapes), the converter to
.safetensors, model discovery, and clear errors for every bad file."""
import os
import pickle
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import save_file

from conftest import ROOT, pack_module
from tiny_deblurdiff import single_thread, micro_config, micro_state, write_model  # noqa: F401  (single_thread: autouse fixture)

dd = pack_module("models.deblurdiff")
CheckpointError = pack_module("models.common.checkpoint").CheckpointError


@pytest.fixture(scope="module")
def micro_file(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("micro") / "model.pth", micro_state(0))


def _prediction(model):
    g = torch.Generator().manual_seed(0)
    x, c = torch.randn(1, 4, 8, 8, generator=g), torch.randn(1, 4, 8, 8, generator=g)
    text = torch.randn(1, 77, model.config.text_encoder.width, generator=g)
    with torch.no_grad():
        eps, refined, _ = model.predict(x, torch.tensor([500]), c, text, 0.7)
        decoded = model.vae.decode(x)
        encoded = model.vae.encode(torch.rand(1, 3, 32, 32, generator=g))
        states = model.text_encoder(model.tokenizer(["a photo"]))
    return eps, refined, decoded, encoded, states


def test_micro_model_loads_strictly_with_sizes_from_shapes(micro_file):
    model = dd.load_deblurdiff(micro_file)
    assert model.config == micro_config()
    assert all(p.device.type == "cpu" and p.dtype == torch.float32 for p in model.parameters())
    eps, refined, *_ = _prediction(model)
    assert eps.shape == refined.shape == (1, 4, 8, 8) and torch.isfinite(eps).all()


def test_reduced_sizes_load(tmp_path):
    base = micro_config()
    unet = replace(base.unet, num_res_blocks=2, transformer_depth=(2, 1, 1), channel_mult=(1, 1, 2), attention=(True, True, False))
    config = replace(base, unet=unet, controlnet=replace(unet, in_channels=12, out_channels=0),
                     lkpn=replace(base.lkpn, linear_projection=False, channel_mult=(1, 2, 2), attention=(True, True, True),
                                  transformer_depth=(1, 1, 1)),
                     vae=replace(base.vae, channel_mult=(1, 2, 2, 2), num_res_blocks=2),
                     text_encoder=replace(base.text_encoder, layers=3, width=64, mlp_width=128, embed_dim=16))
    config = replace(config, unet=replace(config.unet, context_dim=64), controlnet=replace(config.controlnet, context_dim=64),
                     lkpn=replace(config.lkpn, context_dim=64))
    model = dd.load_deblurdiff(write_model(tmp_path / "model.pth", micro_state(3, config)))
    assert model.config == config
    image = torch.rand(1, 3, 20, 27)
    out = dd.deblur(model, image, dd.SamplingOptions(steps=2, cfg_scale=2.0), 0)
    assert out.shape == image.shape and torch.isfinite(out).all()


def test_converter_round_trip(micro_file, tmp_path):
    target = tmp_path / "micro.safetensors"
    command = [sys.executable, os.path.join(ROOT, "tools", "convert_deblurdiff.py"), micro_file, "-o", str(target)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    meta = pack_module("models.common.checkpoint").read_metadata(str(target))
    assert meta["method"] == "deblurdiff" and "official DeblurDiff" in meta["source"]
    official = dd.load_deblurdiff(micro_file)
    converted = dd.load_deblurdiff(str(target))
    assert converted.config == official.config
    for a, b in zip(_prediction(converted), _prediction(official)):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)  # kernels may differ with memory alignment
    dd.save_deblurdiff(official, str(tmp_path / "half.safetensors"), dtype=torch.float16)  # the converter's --half
    half = dd.load_deblurdiff(str(tmp_path / "half.safetensors"))
    assert os.path.getsize(tmp_path / "half.safetensors") < 0.6 * os.path.getsize(target)
    for a, b in zip(_prediction(half), _prediction(official)):
        assert torch.allclose(a, b, atol=0.05, rtol=0.05)


def test_loading_in_half_precision(micro_file):
    model = dd.load_deblurdiff(micro_file, torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    eps, refined, _ = model.predict(torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 4, 8, 8), torch.randn(1, 77, 32))
    assert eps.dtype == torch.float32 and torch.isfinite(eps).all()


def test_find_models_lists_official_and_converted_files_only(micro_file, tmp_path):
    os.makedirs(tmp_path / "DeblurDiff")
    os.symlink(micro_file, tmp_path / "DeblurDiff" / "model.pth")
    dd.save_deblurdiff(dd.load_deblurdiff(micro_file), str(tmp_path / "sub" / "mine.safetensors"))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"method": "hidiff"})
    torch.save({"params": {"w": torch.zeros(1)}}, tmp_path / "net_g.pth")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    assert dd.find_deblurdiff_models(str(tmp_path)) == ["DeblurDiff/model.pth", "sub/mine.safetensors"]


# --- bad files: each gets a CheckpointError naming the file and the problem ---------------------------

def _state(micro_file):
    return torch.load(micro_file, weights_only=True)


def test_missing_part_is_named(micro_file, tmp_path):
    state = {k: v for k, v in _state(micro_file).items() if not k.startswith("kpn.")}
    with pytest.raises(CheckpointError, match=r"no weights for lkpn \('kpn.unet.'\)") as error:
        dd.load_deblurdiff(write_model(tmp_path / "model.pth", state))
    assert str(tmp_path) in str(error.value)


def test_stray_keys_are_refused(micro_file, tmp_path):
    state = {**_state(micro_file), "ema.decay": torch.zeros(())}
    with pytest.raises(CheckpointError, match="'ema.decay'"):
        dd.load_deblurdiff(write_model(tmp_path / "model.pth", state))


def test_wrong_shape_and_missing_key_are_listed(micro_file, tmp_path):
    state = _state(micro_file)
    state["unet.out.0.weight"] = torch.zeros(7)
    with pytest.raises(CheckpointError, match=r"\[unet\].*conv_norm_out.weight: file \(7,\) vs model \(32,\)"):
        dd.load_deblurdiff(write_model(tmp_path / "model.pth", state))
    state = _state(micro_file)
    del state["controlnet.middle_block_out.0.bias"]
    with pytest.raises(CheckpointError, match=r"\[controlnet\].*missing keys: controlnet_mid_block.bias"):
        dd.load_deblurdiff(write_model(tmp_path / "model.pth", state))


def test_parts_that_do_not_fit_together(micro_file, tmp_path):
    config = replace(micro_config(), text_encoder=replace(micro_config().text_encoder, width=64, mlp_width=64))
    state = micro_state(0, config)
    with pytest.raises(CheckpointError, match="attends to 32-wide text, the text encoder gives 64"):
        dd.load_deblurdiff(write_model(tmp_path / "model.pth", state))


def test_other_files_get_clear_errors(micro_file, tmp_path):
    save_file({"x": torch.zeros(1)}, str(tmp_path / "hidiff.safetensors"), metadata={"method": "hidiff"})
    with pytest.raises(CheckpointError, match="'hidiff' model"):
        dd.load_deblurdiff(str(tmp_path / "hidiff.safetensors"))
    data = open(micro_file, "rb").read()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        dd.load_deblurdiff(str(tmp_path / "cut.pth"))
    with open(tmp_path / "code.pth", "wb") as handle:
        pickle.dump({"unet.x": subprocess.Popen}, handle, protocol=2)
    with pytest.raises(CheckpointError):
        dd.load_deblurdiff(str(tmp_path / "code.pth"))
    torch.save({"params": {"net.weight": torch.zeros(1)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="belong to no DeblurDiff part"):
        dd.load_deblurdiff(str(tmp_path / "other.pth"))
    parts = {f"{p}x": torch.zeros(1) for p in dd.loader.PACK_PREFIXES.values()}
    save_file(parts, str(tmp_path / "broken.safetensors"), metadata={"method": "deblurdiff", "config": "{"})
    with pytest.raises(CheckpointError, match="metadata field 'config' is not valid JSON"):
        dd.load_deblurdiff(str(tmp_path / "broken.safetensors"))


def test_converter_reports_bad_input(tmp_path):
    torch.save({"params": {"w": torch.zeros(1)}}, tmp_path / "model.pth")
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_deblurdiff.py"), str(tmp_path / "model.pth")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "error:" in result.stderr and "Traceback" not in result.stderr
