"""Loading HI-Diff: both layouts, reduced sizes, the converter, model discovery, and every bad file."""
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from conftest import DATA, ROOT, pack_module
from tiny_models import tiny_hidiff_states, write_official_layout

hidiff = pack_module("models.hidiff")
CheckpointError = pack_module("models.common.checkpoint").CheckpointError
TINY = os.path.join(DATA, "hidiff_tiny")


def _same_output(a, b):
    image = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(3))
    return torch.equal(hidiff.deblur(a, image, 1), hidiff.deblur(b, image, 1))


def test_unwrapped_and_dataparallel_state_dicts_load(tmp_path):
    for part in ("net_g", "net_le_dm", "net_d"):
        state = torch.load(os.path.join(TINY, f"{part}.pth"), weights_only=True)["params"]
        prefix = "module." if part == "net_g" else ""
        torch.save({prefix + k: v for k, v in state.items()}, tmp_path / f"{part}.pth")
    assert _same_output(hidiff.load_hidiff(str(tmp_path)), hidiff.load_hidiff(TINY))


def test_reduced_sizes_are_read_from_shapes(tmp_path):
    torch.manual_seed(1)
    config = hidiff.TransformerConfig.standard(dim=12, num_blocks=(2, 1, 1, 2), num_refinement_blocks=2,
                                               heads=(2, 2, 4, 4), ffn_expansion_factor=2.0, embed_dim=4, bias=True)
    states = tiny_hidiff_states(seed=5)
    states["net_g"] = hidiff.Transformer(config).state_dict()
    states["net_le_dm"] = hidiff.LatentEncoder(hidiff.LatentEncoderConfig.standard(embed_dim=4, block_num=2)).state_dict()
    states["net_d"] = hidiff.MixerDenoiser.standard(channels=16, inner=8).state_dict()
    model = hidiff.load_hidiff(write_official_layout(tmp_path / "small", states))
    assert model.net_g.config == config
    assert model.prior_shape == (16, 16)
    out = hidiff.deblur(model, torch.rand(1, 3, 17, 19), 0)
    assert out.shape == (1, 3, 17, 19) and torch.isfinite(out).all()


def test_converter_round_trip(tmp_path):
    target = tmp_path / "tiny.safetensors"
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_hidiff.py"), TINY, "-o", str(target)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    merged = hidiff.load_hidiff(str(target))
    assert merged.net_le is not None
    assert _same_output(merged, hidiff.load_hidiff(TINY))
    meta = pack_module("models.common.checkpoint").read_metadata(str(target))
    assert meta["method"] == "hidiff" and '"timesteps": 8' in meta["sampler"]


def test_converter_reports_bad_folder(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_hidiff.py"), str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "net_g.pth" in result.stderr and "Traceback" not in result.stderr


def test_find_models_lists_folders_and_merged_files_only(tmp_path):
    shutil.copytree(TINY, tmp_path / "HI_Diff_GoPro")
    hidiff.save_hidiff(hidiff.load_hidiff(TINY), str(tmp_path / "sub" / "mine.safetensors"))
    save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"method": "deblurdiff"})
    (tmp_path / "incomplete").mkdir()
    shutil.copy(os.path.join(TINY, "net_g.pth"), tmp_path / "incomplete")
    assert hidiff.find_hidiff_models(str(tmp_path)) == ["HI_Diff_GoPro", "sub/mine.safetensors"]


# --- bad files: each gets a CheckpointError naming the file and the problem ---------------------------

def _folder_with(tmp_path, part, writer):
    folder = tmp_path / "model"
    shutil.copytree(TINY, folder)
    path = folder / f"{part}.pth"
    writer(path)
    return folder, path


class NeedsCode:  # a pickle that needs code to load
    pass


BAD_FILES = {
    "empty": (lambda p: p.write_bytes(b""), "empty"),
    "truncated": (lambda p: p.write_bytes(open(os.path.join(TINY, "net_g.pth"), "rb").read()[:5000]), "truncated"),
    "text": (lambda p: p.write_text("<html>Google Drive quota exceeded</html>"), "not a PyTorch checkpoint"),
    "needs code": (lambda p: torch.save({"params": NeedsCode()}, p), "need code"),
    "not a dict": (lambda p: torch.save([torch.zeros(1)], p), "not a dict"),
    "foreign keys": (lambda p: torch.save({"params": {"conv.weight": torch.zeros(1, 1, 3, 3)}}, p), "patch_embed.proj.weight"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_net_g_file(tmp_path, case):
    writer, words = BAD_FILES[case]
    folder, path = _folder_with(tmp_path, "net_g", writer)
    with pytest.raises(CheckpointError) as info:
        hidiff.load_hidiff(str(folder))
    assert str(path) in str(info.value)
    assert words in str(info.value)


def test_shape_mismatch_and_missing_keys_are_listed(tmp_path):
    def corrupt(path):
        state = torch.load(os.path.join(TINY, "net_le_dm.pth"), weights_only=True)["params"]
        state["conv2.weight"] = torch.zeros(8, 8, 5, 5)
        del state["end.0.bias"]
        torch.save({"params": state}, path)

    folder, path = _folder_with(tmp_path, "net_le_dm", corrupt)
    with pytest.raises(CheckpointError) as info:
        hidiff.load_hidiff(str(folder))
    message = str(info.value)
    assert str(path) in message and "end.0.bias" in message and "conv2.weight: file (8, 8, 5, 5)" in message


def test_missing_part_and_mismatched_parts(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(TINY, folder)
    os.remove(folder / "net_d.pth")
    with pytest.raises(CheckpointError, match="net_d.pth"):
        hidiff.load_hidiff(str(folder))
    shutil.copy(os.path.join(DATA, "hidiff_tiny_realblur", "net_le_dm.pth"), folder / "net_le_dm.pth")
    shutil.copy(os.path.join(TINY, "net_d.pth"), folder / "net_d.pth")
    torch.save({"params": hidiff.MixerDenoiser.standard(channels=16, inner=8).state_dict()}, folder / "net_d.pth")
    with pytest.raises(CheckpointError, match="do not fit together"):
        hidiff.load_hidiff(str(folder))


def test_bad_safetensors(tmp_path):
    good = tmp_path / "good.safetensors"
    hidiff.save_hidiff(hidiff.load_hidiff(TINY), str(good))
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:3000])
    with pytest.raises(CheckpointError, match="truncated"):
        hidiff.load_hidiff(str(truncated))
    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(1)}, str(other), metadata={"method": "deblurdiff"})
    with pytest.raises(CheckpointError, match="not an HI-Diff"):
        hidiff.load_hidiff(str(other))
    unlabelled = tmp_path / "unlabelled.safetensors"
    save_file({"x": torch.zeros(1)}, str(unlabelled))
    with pytest.raises(CheckpointError, match="net_g, net_le_dm, net_d"):
        hidiff.load_hidiff(str(unlabelled))


def test_colour_fix_is_stored_with_the_model_checked_and_keeps_the_input_colours(tmp_path):
    """A model file may ask for colour anchoring (models.common.colour): the output then keeps the
    input's low frequencies, so a tint the network adds is gone while its detail stays."""
    from safetensors.torch import load_file, save_file

    training = pack_module("models.hidiff.training")
    colour = pack_module("models.common.colour")
    torch.manual_seed(0)
    model = training.build_model(training.PRESETS["tiny"]).eval()
    image = torch.rand(1, 3, 40, 48, generator=torch.Generator().manual_seed(1))
    noise = model.initial_noise(1, 3)
    plain = model(image, noise)
    model.colour_fix = 8.0
    path = tmp_path / "anchored.safetensors"
    pack_module("models.hidiff").save_hidiff(model, str(path))
    loaded = pack_module("models.hidiff").load_hidiff(str(path))
    assert loaded.colour_fix == 8.0
    anchored = loaded(image, noise)
    low = lambda x: colour.gaussian_lowpass(x, 8.0)
    assert (low(anchored) - low(image)).abs().mean() < 0.2 * (low(plain) - low(image)).abs().mean()
    detail = lambda x: x - low(x)
    assert torch.allclose(detail(anchored), detail(plain), atol=0.05)
    flat = torch.full((1, 3, 32, 32), 0.4)
    loaded.colour_fix = 0.0
    drift = (loaded(flat, noise).mean(dim=(2, 3)) - 0.4).abs().max()
    loaded.colour_fix = 8.0
    assert (loaded(flat, noise).mean(dim=(2, 3)) - 0.4).abs().max() < drift / 20
    tensors = load_file(str(path))
    metadata = pack_module("models.common.checkpoint").read_metadata(str(path))
    for bad in ("nan", "-1", "1e9", "wide"):
        save_file(tensors, str(tmp_path / "bad.safetensors"), metadata={**metadata, "colour_fix": bad})
        with pytest.raises(CheckpointError, match="colour_fix"):
            pack_module("models.hidiff").load_hidiff(str(tmp_path / "bad.safetensors"))
