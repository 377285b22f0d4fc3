"""Number inputs are checked on the server side for every node: NaN, infinities, values outside the
declared range and INT values off their step are refused with a message naming the node and input
(issue 11, finding 9)."""
import math

import pytest
import torch

from conftest import load_pack, pack_module

pack = load_pack()
number_inputs = pack_module("nodes.number_inputs")
blur_lab = pack_module("nodes.blur_lab")
hidiff_nodes = pack_module("nodes.hidiff")

NUMBER_INPUTS = [(key, name, kind) for key, cls in sorted(pack.NODE_CLASS_MAPPINGS.items())
                 for name, (kind, _) in number_inputs.number_inputs(cls).items()]


def call(node_class, **inputs):
    node = node_class()
    return getattr(node, node_class.FUNCTION)(**inputs)


@pytest.mark.parametrize("key,name,kind", NUMBER_INPUTS, ids=[f"{k}.{n}" for k, n, _ in NUMBER_INPUTS])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 1e30, -1e30], ids=["nan", "inf", "-inf", "huge", "-huge"])
def test_every_number_input_of_every_node_refuses_bad_values(key, name, kind, value):
    node_class = pack.NODE_CLASS_MAPPINGS[key]
    options = number_inputs.number_inputs(node_class)[name][1]
    if value == 1e30 and options.get("max", math.inf) >= 1e30 or value == -1e30 and options.get("min", -math.inf) <= -1e30:
        pytest.skip("within this input's declared range")
    with pytest.raises(ValueError, match=f"{key}: {name} must be"):
        call(node_class, **{name: value})


def test_the_reported_api_cases_get_clear_messages():
    image = torch.rand(1, 16, 16, 3)
    with pytest.raises(ValueError, match="heatmap_scale must be a finite number, got nan"):
        blur_lab.DeblurMetrics().measure(image, image, heatmap_scale=math.nan)
    with pytest.raises(ValueError, match="split_position must be a finite number"):
        blur_lab.DeblurCompare().compare(image, image, "split", math.nan)
    with pytest.raises(ValueError, match="camera_gamma must be a finite number"):
        blur_lab.SyntheticMotionBlur().blur(image, 0, 0.5, 9, 0.0, "camera_shake", 1, math.nan)
    with pytest.raises(ValueError, match="tile_size must be 0 plus a multiple of 8, got 1"):
        hidiff_nodes.HIDiffDeblur().deblur(None, image, 0, 1, 0)
    with pytest.raises(ValueError, match="kernel_size must be odd, got 4"):
        blur_lab.SyntheticMotionBlur().blur(image, 0, 0.5, 4, 0.0)
    with pytest.raises(ValueError, match="seed must be a whole number"):
        blur_lab.SyntheticMotionBlur().blur(image, 0.5, 0.5, 9, 0.0)


def test_valid_values_pass_through_unchanged():
    image = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    (blurred, _) = blur_lab.SyntheticMotionBlur().blur(image, 3, 0.5, 9, 0.0, camera_gamma=2.2)
    assert torch.isfinite(blurred).all() and blurred.shape == image.shape
    blur_lab.DeblurCompare().compare(image, image, "split", 0.25)
    text, *_ = blur_lab.DeblurMetrics().measure(image, image, heatmap_scale=0.5)
    assert "PSNR" in text


def test_the_guard_wraps_each_function_once():
    for node_class in pack.NODE_CLASS_MAPPINGS.values():
        method = getattr(node_class, node_class.FUNCTION)
        assert method.checks_numbers and not getattr(method.__wrapped__, "checks_numbers", False)
    number_inputs.guard_number_inputs(pack.NODE_CLASS_MAPPINGS)
    for node_class in pack.NODE_CLASS_MAPPINGS.values():
        assert not getattr(getattr(node_class, node_class.FUNCTION).__wrapped__, "checks_numbers", False)


def test_async_node_functions_stay_async():
    import asyncio

    class AsyncNode:
        FUNCTION = "run"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"amount": ("FLOAT", {"default": 0.5, "min": 0.0, "max": 1.0})}}

        async def run(self, amount):
            return (amount * 2,)

    number_inputs.guard_number_inputs({"AsyncNode": AsyncNode})
    import inspect

    assert inspect.iscoroutinefunction(AsyncNode.run)
    assert asyncio.run(AsyncNode().run(amount=0.25)) == (0.5,)
    with pytest.raises(ValueError, match="AsyncNode: amount must be a finite number"):
        asyncio.run(AsyncNode().run(amount=math.nan))
