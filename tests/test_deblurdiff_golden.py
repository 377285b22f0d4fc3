"""Our DeblurDiff against the official implementation run on the CPU (tests/golden/make_deblurdiff_golden.py):
same tiny weights (official model.pth layout), images, seeds and settings; final latents within 1e-3
relative, 8-bit images within one level."""
import os

import pytest
import torch

from conftest import pack_module
from tiny_deblurdiff import single_thread, GOLDEN_FILE, golden_state, write_model  # noqa: F401  (single_thread: autouse fixture)

dd = pack_module("models.deblurdiff")
nodes = pack_module("nodes.deblurdiff")
GOLDEN = torch.load(GOLDEN_FILE, weights_only=True)
CASES = {case["name"]: case for case in GOLDEN["cases"]}
LATENT_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def golden_model_file(tmp_path_factory):
    return write_model(tmp_path_factory.mktemp("deblurdiff") / "DeblurDiff" / "model.pth",
                       golden_state(GOLDEN["meta"]["weight_seed"]))


@pytest.fixture(scope="module")
def model(golden_model_file):
    return dd.load_deblurdiff(golden_model_file)


def options_of(case) -> "dd.SamplingOptions":
    o = case["options"]
    return dd.SamplingOptions(steps=o["steps"], cfg_scale=o["cfg_scale"], strength=o["strength"], positive=o["pos_prompt"],
                              negative=o["neg_prompt"], better_start=o["better_start"], tiled=o["tiled"],
                              tile_size=o["tile_size"], tile_stride=o["tile_stride"])


def to_8bit(image):  # the official conversion: (x * 255).clamp(0, 255) truncated to uint8
    return (image[0].permute(1, 2, 0) * 255).clamp(0, 255).to(torch.uint8)


@pytest.mark.parametrize("name", list(CASES))
def test_pipeline_matches_official(model, name):
    case = CASES[name]
    model.set_attention_window(dd.ATTENTION_WINDOW // case["window_divisor"] if case["window_divisor"] else dd.ATTENTION_WINDOW)
    try:
        image = case["input"].permute(2, 0, 1)[None].float() / 255
        output, latent = dd.deblur(model, image, options_of(case), case["seed"], keep_latents=True)
    finally:
        model.set_attention_window(dd.ATTENTION_WINDOW)
    expected = case["latent"]
    assert latent.shape == expected.shape
    assert (latent - expected).abs().max() <= LATENT_TOLERANCE * expected.abs().max()
    difference = (to_8bit(output).int() - case["output"].int()).abs()
    assert difference.max() <= 1


def test_text_states_and_first_lkpn_step_match_official(model):
    case = CASES["plain"]
    assert torch.allclose(model.encode_text(case["options"]["pos_prompt"]), case["c_txt"], atol=1e-5)
    t = torch.tensor([case["first_t"]])
    refined, _ = model.refine(case["x_T"], t, case["c_img"], case["c_txt"])
    assert torch.allclose(refined, case["first_lkpn"], rtol=1e-4, atol=1e-5)


def test_encode_node_draws_the_official_condition_and_start(model, golden_model_file):
    case = CASES["plain"]
    handle = nodes.DeblurDiffHandle(model, "golden", torch.float32)
    image = case["input"][None].float() / 255
    condition, start = nodes.DeblurDiffEncode().encode(handle, image, case["seed"], False)
    scale = model.config.latent_scale
    assert torch.allclose(condition["samples"] * scale, case["c_img"], atol=1e-5)
    assert torch.allclose(start["samples"] * scale, case["x_T"], atol=1e-5)
    refined, kernels, preview = nodes.LKPNStep().step(handle, condition, start, case["first_t"], "")["result"]
    assert torch.allclose(refined["samples"] * scale, case["first_lkpn"], rtol=1e-4, atol=1e-5)


def test_sampler_node_reproduces_official_image(golden_model_file, models_dir):
    os.symlink(os.path.dirname(golden_model_file), models_dir / "DeblurDiff")
    (handle,) = nodes.DeblurDiffLoader().load("DeblurDiff/model.pth", "fp32")
    case = CASES["cfg_better_start"]
    o = case["options"]
    image = case["input"][None].float() / 255
    (output,) = nodes.DeblurDiffSampler().sample(handle, image, o["pos_prompt"], o["neg_prompt"], o["steps"], o["cfg_scale"],
                                                 o["strength"], case["seed"], o["better_start"])
    assert output.shape == image.shape
    difference = ((output[0] * 255).clamp(0, 255).to(torch.uint8).int() - case["output"].int()).abs()
    assert difference.max() <= 1
