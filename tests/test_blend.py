"""nodes/blend.py: a deblur node's result blended back into its input through a MASK and a strength."""
import pytest
import torch

from conftest import pack_module

blend_module = pack_module("nodes.blend")
blend = blend_module.blend


def _pair(b=2, h=12, w=16, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, c, generator=g), torch.rand(b, h, w, c, generator=g)


def test_strength_one_without_mask_is_the_result_itself():
    original, result = _pair()
    assert blend(original, result) is result
    assert blend(original, result, None, 1.0, 5) is result


def test_strength_zero_is_the_input_exactly():
    original, result = _pair()
    assert torch.equal(blend(original, result, None, 0.0), original)
    assert torch.equal(blend(original, result, torch.rand(2, 12, 16), 0.0, 3), original)


def test_mask_zero_keeps_the_input_and_one_takes_the_result_bit_for_bit():
    original, result = _pair()
    assert torch.equal(blend(original, result, torch.zeros(2, 12, 16)), original)
    assert torch.equal(blend(original, result, torch.ones(2, 12, 16)), result)


def test_partial_mask_and_strength_mix_linearly():
    original, result = _pair()
    mask = torch.zeros(12, 16)
    mask[:, 8:] = 0.5
    out = blend(original, result, mask, 0.8)
    assert torch.equal(out[:, :, :8], original[:, :, :8])
    expected = original[:, :, 8:] + 0.4 * (result[:, :, 8:] - original[:, :, 8:])
    assert torch.allclose(out[:, :, 8:], expected, atol=1e-6)
    half = blend(original, result, None, 0.25)
    assert torch.allclose(half, original + 0.25 * (result - original), atol=1e-6)


def test_one_mask_serves_every_image_and_a_short_batch_repeats_as_comfy_does():
    original, result = _pair(b=3)
    single = torch.zeros(1, 12, 16)
    single[0, :6] = 1
    out = blend(original, result, single)
    assert torch.equal(out[:, :6], result[:, :6]) and torch.equal(out[:, 6:], original[:, 6:])
    two = torch.stack([torch.ones(12, 16), torch.zeros(12, 16)])  # comfy.utils.repeat_to_batch_size: 1, 0, 1
    out = blend(original, result, two)
    assert torch.equal(out[0], result[0]) and torch.equal(out[1], original[1]) and torch.equal(out[2], result[2])
    four = torch.zeros(4, 12, 16)  # more masks than images: the first ones
    assert torch.equal(blend(original, result, four), original)


def test_a_mask_of_another_size_is_resized_bilinearly_and_clamped():
    original, result = _pair(h=20, w=30)
    mask = torch.zeros(1, 10, 15)
    mask[:, :, 8:] = 3.0  # out of range: clamped to 1
    out = blend(original, result, mask)
    assert out.shape == result.shape
    assert torch.equal(out[:, :, :14], original[:, :, :14])
    assert torch.equal(out[:, :, 18:], result[:, :, 18:])
    edge = out[:, :, 15:17]
    assert not torch.equal(edge, original[:, :, 15:17]) and not torch.equal(edge, result[:, :, 15:17])


def test_feather_softens_the_edge_only():
    original, result = torch.zeros(1, 40, 40, 3), torch.ones(1, 40, 40, 3)
    mask = torch.zeros(40, 40)
    mask[:, 20:] = 1
    hard = blend(original, result, mask)[0, 20, :, 0]
    soft = blend(original, result, mask, 1.0, 6)[0, 20, :, 0]
    assert set(hard.tolist()) == {0.0, 1.0}
    assert 0 < soft[19] < 1 and 0 < soft[20] < 1 and soft[19] < soft[20]
    assert torch.all(soft[1:] >= soft[:-1])  # monotonic ramp
    assert soft[0] == 0 and soft[-1] == 1  # far from the edge: unchanged
    feathered = blend_module.prepare_mask(mask, 1, 40, 40, 6)
    assert feathered.shape == (1, 40, 40) and 0 <= feathered.min() and feathered.max() <= 1


def test_alpha_and_grey():
    original, result = _pair(c=4)
    result[..., 3] = original[..., 3]  # the nodes carry the input's alpha through
    out = blend(original, result, torch.zeros(12, 16).index_fill_(1, torch.arange(8), 1.0), 0.5)
    assert torch.equal(out[..., 3], original[..., 3])
    assert not torch.equal(out[..., :3], original[..., :3])
    grey, grey_result = _pair(c=1)
    assert blend(grey, grey_result, None, 0.5).shape == grey.shape


def test_bad_inputs_are_named():
    original, result = _pair()
    with pytest.raises(ValueError, match="strength"):
        blend(original, result, None, 1.5)
    with pytest.raises(ValueError, match="strength"):
        blend(original, result, None, float("nan"))
    with pytest.raises(ValueError, match="mask"):
        blend(original, result, torch.rand(2, 2, 12, 16))
    with pytest.raises(ValueError, match="mask"):
        blend(original, result, torch.full((12, 16), float("nan")))
    with pytest.raises(ValueError, match="differ"):
        blend(original[:, :6], result, None, 0.5)
    with pytest.raises(ValueError, match="feather"):
        blend(original, result, torch.ones(12, 16), 1.0, -1)


def test_every_node_that_returns_a_deblurred_image_offers_mask_strength_and_feather():
    mappings = pack_module("nodes").NODE_CLASS_MAPPINGS
    wired = {"HIDiffDeblur", "HIDiffRestore", "DeblurDiffSampler", "DeblurDiffDecode", "FideDiffDeblur", "FideDiffDecode",
             "OSDDDeblur", "eVAEDecode"}
    for name in wired:
        optional = mappings[name].INPUT_TYPES()["optional"]
        assert list(optional)[-3:] == ["mask", "strength", "feather"], name  # last: old widgets_values still line up
        assert optional["mask"][0] == "MASK" and optional["strength"][1]["default"] == 1.0
        assert optional["feather"][1]["default"] == 0
