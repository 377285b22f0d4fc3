"""Pictures made for people stay bounded for any input (issue 20): Blur Kernel Preview of a per-pixel
kernel map (one kernel per 8x8 pixels of a photo, as Blur Kernel Estimate makes) and Deblur Compare
of two images of any shapes. The large cases run in a child under a memory ceiling (memory_limit)."""
from __future__ import annotations

import torch

from conftest import pack_module
from memory_limit import run_limited

lab = pack_module("nodes.blur_lab")
kernel_ui = pack_module("nodes.kernel_ui")
preview_module = pack_module("models.blur.preview")
visual = pack_module("models.common.visual")


def estimate_like(height: int, width: int, size: int = 19, batch: int = 1) -> dict:
    """A BLUR_KERNEL shaped like Blur Kernel Estimate's for a photo: a ``size``² kernel per 8x8
    pixels (each a short horizontal line, so every cell is a valid kernel)."""
    kernels = torch.zeros(batch, -(-height // 8), -(-width // 8), size, size)
    kernels[..., size // 2, size // 2 - 2:size // 2 + 3] = 0.2
    return {"kernels": kernels, "level": [40.0] * batch, "info": [{"kind": "estimated", "grid": list(kernels.shape[1:3])}] * batch}


def preview_shape(height: int, width: int, size: int, batch: int = 1) -> list[int]:
    """Blur Kernel Preview (the node) of a photo's estimated kernels: the picture's shape."""
    out = lab.BlurKernelPreview().preview(estimate_like(height, width, batch=batch), size)
    return list(out["result"][0].shape)


def compare_shapes(cases: list) -> list[list[int]]:
    """Deblur Compare's output shape for each ``[a, b, mode]`` (image sizes ``[h, w]``)."""
    shapes = []
    for a, b, mode in cases:
        out = lab.DeblurCompare().compare(torch.rand(1, *a, 3), torch.rand(1, *b, 3), mode, 0.5, "a", "b")
        shapes.append(list(out["result"][0].shape))
    return shapes


def limited(function: str, *args):
    """``function(*args)`` of this module in a child under the memory ceiling (every call that would
    be large if a bound regressed runs there, never in the test process)."""
    result = run_limited("tests:test_bounded_pictures", function, *args)
    assert result["error"] is None, result
    return result["value"]


def test_preview_of_a_768px_photo_estimate_is_a_bounded_grid_drawn_from_the_node_cells():
    value = estimate_like(768, 768)  # a 96x96 grid of 19x19 kernels
    shown = preview_module.MAX_CELLS
    assert limited("preview_shape", 768, 768, 256) == [1, shown * 256, shown * 256, 3]
    assert "12x12 of 96x96 shown" in preview_module.caption(value, 0)
    payload = kernel_ui.kernel_ui(value)["deblur_kernels"][0]
    assert payload["shown"] == [shown, shown]  # the same sub-grid as the drawing on the node
    rows = preview_module.cell_indices(96, shown)
    assert torch.equal(preview_module.thinned(value["kernels"])[0], value["kernels"][0][rows][:, rows])


def test_preview_size_is_capped_for_any_photo_and_batch():
    for height, width, size, batch in ((768, 768, 2048, 1), (4096, 4096, 2048, 1), (768, 768, 2048, 8)):
        _, h, w, _ = limited("preview_shape", height, width, size, batch)
        assert max(h, w) <= preview_module.MAX_SIDE and h * w * batch <= preview_module.MAX_PIXELS


def test_preview_of_a_small_grid_draws_every_kernel_at_the_size_asked_for():
    assert preview_module.preview(estimate_like(16, 24), 64).shape == (1, 3, 128, 192)  # a 2x3 grid


def test_compare_of_very_different_shapes_is_bounded():
    pairs = (([512, 8], [1, 512]), ([1, 512], [512, 8]), ([1, 20000], [20000, 1]), ([20000, 1], [1, 20000]))
    cases = [[a, b, mode] for a, b in pairs for mode in ("side_by_side", "split")]
    for (a, _, mode), (_, h, w, _) in zip(cases, limited("compare_shapes", cases)):
        if mode == "split":
            assert [h, w] == a  # one frame of image_a's size, whatever image_b's
        else:
            assert 1 <= h <= visual.MAX_COMPOSITE_SIDE and 1 <= w <= visual.MAX_COMPOSITE_SIDE, (a, mode, h, w)
            assert h * w <= visual.MAX_COMPOSITE_PIXELS


def test_compare_of_ordinary_images_is_unchanged():
    assert compare_shapes([[[512, 512], [256, 256], "side_by_side"], [[300, 400], [300, 400], "side_by_side"]]) == \
        [[1, 512, 512 + 4 + 512, 3], [1, 300, 804, 3]]
