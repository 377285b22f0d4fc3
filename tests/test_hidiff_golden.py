"""Our HI-Diff against outputs of the official implementation (tests/golden/make_hidiff_golden.py)."""
import json
import os

import pytest
import torch

from conftest import DATA, pack_module
from random_weights import random_state_dict

hidiff = pack_module("models.hidiff")
nodes = pack_module("nodes.hidiff")
GOLDEN = torch.load(os.path.join(DATA, "hidiff_golden.pt"), weights_only=True)
SHAPES = json.load(open(os.path.join(DATA, "hidiff_shapes.json")))
TOLERANCE = 1e-4


@pytest.mark.parametrize("config", ["tiny", "tiny_realblur"])
def test_tiny_release_matches_official(config):
    model = hidiff.load_hidiff(os.path.join(DATA, f"hidiff_{config}"))
    assert model.net_le is not None  # the stage-one encoder in the folder loads too
    for case in GOLDEN[config]:
        prior = hidiff.compute_priors(model, case["input"], case["seed"])
        output = hidiff.deblur(model, case["input"], case["seed"])
        assert (prior - case["prior"]).abs().max() < TOLERANCE
        assert (output - case["output"]).abs().max() < TOLERANCE


@pytest.mark.parametrize("config,seed", [("gopro", 2024), ("realblur", 2025)])
def test_release_sizes_load_strictly_and_match_official(tmp_path, config, seed):
    for part in ("net_g", "net_le_dm", "net_d", "net_le"):
        state = random_state_dict(SHAPES[config][part], seed)
        torch.save({"params": state}, tmp_path / f"{part}.pth")
    model = hidiff.load_hidiff(str(tmp_path))
    sizes = model.net_g.config
    assert (sizes.dim, sizes.prior_dim, sizes.group) == (48, 256, 4)
    assert [sizes.layers[n].blocks for n in ("encoder_level1", "encoder_level2", "encoder_level3", "latent", "refinement")] == [3, 5, 6, 6, 4]
    assert model.sampler.config.timesteps == (8 if config == "gopro" else 16)
    (case,) = GOLDEN[f"{config}_random"]
    output = hidiff.deblur(model, case["input"], case["seed"])
    assert output.shape == case["output"].shape
    assert (output - case["output"]).abs().max() < TOLERANCE


def test_deblur_node_reproduces_official_image(models_dir):
    os.symlink(os.path.join(DATA, "hidiff_tiny"), models_dir / "HI_Diff_GoPro")
    (model,) = nodes.HIDiffLoader().load("HI_Diff_GoPro", "fp32")
    case = GOLDEN["tiny"][0]  # 37 x 45, odd on both sides
    image = case["input"].permute(0, 2, 3, 1)
    (output,) = nodes.HIDiffDeblur().deblur(model, image, case["seed"])
    expected = case["output"].clamp(0, 1).permute(0, 2, 3, 1)
    assert output.shape == image.shape
    assert (output - expected).abs().max() < TOLERANCE
