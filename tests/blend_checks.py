"""Shared check that a deblur node honours its mask, strength and feather inputs (nodes/blend.py)."""
import torch


def check_node_blends(run, image: torch.Tensor) -> None:
    """``run(**blend_inputs)`` calls the node on ``image`` (deterministically) and returns its IMAGE."""
    full = run()
    assert full.shape == image.shape and not torch.equal(full, image)
    assert torch.equal(run(strength=1.0, feather=0), full)
    assert torch.equal(run(strength=0.0), image)  # the input, bit for bit
    h, w = image.shape[1:3]
    mask = torch.zeros(1, h, w)
    mask[:, :, : w // 2] = 1
    masked = run(mask=mask)
    assert torch.equal(masked[:, :, : w // 2], full[:, :, : w // 2])
    assert torch.equal(masked[:, :, w // 2:], image[:, :, w // 2:])
    half = run(strength=0.5)
    assert torch.allclose(half, image + 0.5 * (full - image), atol=1e-5)
    soft = run(mask=mask, feather=3)
    assert not torch.equal(soft, masked) and torch.equal(soft[:, :, :1], full[:, :, :1])
