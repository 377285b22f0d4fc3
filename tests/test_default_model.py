"""The bundled default model: small, loads, listed first by the loader, used by the CLI when no
model is named."""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

from conftest import DATA, ROOT, pack_module

sys.path.insert(0, os.path.join(ROOT, "tools"))
default = pack_module("models.hidiff.default_model")
nodes = pack_module("nodes.hidiff")
hidiff = pack_module("models.hidiff")


def test_bundled_file_is_small_complete_and_documented():
    assert default.default_available()
    assert os.path.getsize(default.DEFAULT_PATH) <= 10 * 1024 * 1024
    model = hidiff.load_hidiff(default.DEFAULT_PATH)
    assert model.net_le is not None  # training can continue from it
    metadata = pack_module("models.common.checkpoint").read_metadata(default.DEFAULT_PATH)
    info = json.loads(metadata["training"])
    assert info["stage"] == 2 and info["iteration"] > 0
    assert os.path.isfile(default.MODEL_CARD)
    out = hidiff.deblur(model, torch.rand(1, 3, 24, 40, generator=torch.Generator().manual_seed(0)), seed=100)
    assert out.shape == (1, 3, 24, 40) and torch.isfinite(out).all()


def test_loader_lists_the_bundled_model_first(models_dir):
    assert nodes.list_models() == [default.DEFAULT_NAME]
    os.symlink(os.path.join(DATA, "hidiff_tiny"), models_dir / "HI_Diff_GoPro")
    assert nodes.list_models() == [default.DEFAULT_NAME, "HI_Diff_GoPro"]
    handle = nodes.HIDiffLoader().load(default.DEFAULT_NAME, "fp32")[0]
    assert handle.name == default.DEFAULT_NAME


def test_cli_uses_the_bundled_model_by_default(tmp_path):
    import deblur

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    assert deblur.main([str(tmp_path / "small.png"), "--device", "cpu"]) == 0
    with Image.open(tmp_path / "small_deblurred.png") as out:
        assert out.size == (48, 32) and out.mode == "RGB"
