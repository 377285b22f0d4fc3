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


def preview_shape(height: int, width: int, size: int) -> list[int]:
    """Blur Kernel Preview (the node) of a photo's estimated kernels: the picture's shape."""
    out = lab.BlurKernelPreview().preview(estimate_like(height, width), size)
    return list(out["result"][0].shape)


def compare_shape(a: list[int], b: list[int], mode: str) -> list[int]:
    out = lab.DeblurCompare().compare(torch.rand(1, *a, 3), torch.rand(1, *b, 3), mode, 0.5, "a", "b")
    return list(out["result"][0].shape)


def test_preview_of_a_768px_photo_estimate_is_a_bounded_grid_drawn_from_the_node_cells():
    value = estimate_like(768, 768)  # a 96x96 grid of 19x19 kernels
    picture = preview_module.preview(value, 256)
    shown = preview_module.MAX_CELLS
    assert picture.shape == (1, 3, shown * 256, shown * 256)
    assert "12x12 of 96x96 shown" in preview_module.caption(value, 0)
    payload = kernel_ui.kernel_ui(value)["deblur_kernels"][0]
    assert payload["shown"] == [shown, shown]  # the same sub-grid as the drawing on the node
    rows = preview_module.cell_indices(96, shown)
    assert torch.equal(preview_module.thinned(value["kernels"])[0], value["kernels"][0][rows][:, rows])


def test_preview_size_is_capped_and_small_grids_are_drawn_whole():
    picture = preview_module.preview(estimate_like(768, 768), 2048)
    assert max(picture.shape[-2:]) <= preview_module.MAX_SIDE
    small = estimate_like(16, 24)  # a 2x3 grid: every kernel shown, at the size asked for
    assert preview_module.preview(small, 64).shape == (1, 3, 128, 192)
    batch = preview_module.preview(estimate_like(768, 768, batch=8), 2048)
    assert batch[0].numel() // 3 * 8 <= preview_module.MAX_PIXELS


def test_preview_of_a_768px_photo_stays_under_the_memory_ceiling():
    result = run_limited("tests:test_bounded_pictures", "preview_shape", 768, 768, 256)
    assert result["error"] is None and result["value"] == [1, 3072, 3072, 3], result


def test_preview_of_a_4096px_photo_stays_under_the_memory_ceiling():
    result = run_limited("tests:test_bounded_pictures", "preview_shape", 4096, 4096, 2048)
    assert result["error"] is None, result
    assert max(result["value"][1:3]) <= preview_module.MAX_SIDE, result


def test_side_by_side_of_very_different_shapes_is_bounded():
    result = run_limited("tests:test_bounded_pictures", "compare_shape", [512, 8], [1, 512], "side_by_side")
    assert result["error"] is None, result
    _, h, w, _ = result["value"]
    assert w <= visual.MAX_COMPOSITE_SIDE and h * w <= visual.MAX_COMPOSITE_PIXELS, result
    for a, b in (([512, 8], [1, 512]), ([1, 512], [512, 8]), ([1, 20000], [20000, 1]), ([20000, 1], [1, 20000])):
        _, h, w, _ = compare_shape(a, b, "side_by_side")
        assert 1 <= h <= visual.MAX_COMPOSITE_SIDE and w <= visual.MAX_COMPOSITE_SIDE and h * w <= visual.MAX_COMPOSITE_PIXELS
        assert compare_shape(a, b, "split")[1:3] == a  # one frame of image_a's size


def test_side_by_side_of_ordinary_images_is_unchanged():
    assert compare_shape([512, 512], [256, 256], "side_by_side") == [1, 512, 512 + 4 + 512, 3]
    assert compare_shape([300, 400], [300, 400], "side_by_side") == [1, 300, 804, 3]
