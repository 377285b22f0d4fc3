"""M and T together: tiled estimation on images of any size, and the pack's file format.

File layout (``.safetensors``): M's tensors under ``estimator.``, T's under ``regressor.``, metadata
``method = fidediff_estimator`` and ``fidediff_estimator`` (JSON sizes, informative only: sizes are read
from the tensor shapes). A FideDiff adapter file holds the same keys next to its other parts, so
:func:`estimator_from_state` reads both and ignores every other key.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..common.checkpoint import SAFETENSORS_SUFFIXES, CheckpointError, read_metadata, read_state_dict, safetensors_header
from ..common.state_dict import build_checked, check_entries, check_size, count_indexed, load_strict, shape_of, sub_state
from ..common.tiling import tile_count as tiles_covering, tiled_apply
from .estimator import (LEVEL_MAX, LEVEL_STRIDE, BlurLevelRegressor, EstimatorConfig, KernelEstimator,
                        RegressorConfig, config_dict)

METHOD = "fidediff_estimator"
PREFIXES = ("estimator.", "regressor.")
DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "default")
DEFAULT_PATH = os.path.join(DEFAULT_DIR, "fidediff_estimator_synthetic.safetensors")
DEFAULT_NAME = "(bundled) fidediff_estimator_synthetic"
TILE = 512  # pixels; M sees one tile at a time above this (memory follows the tile)
OVERLAP = 64
# Bounds of the architecture a file's shapes may describe, far above the bundled model's (19x19
# kernels, 8 basis kernels, widths 16..96, 4 levels of one block, T 64 wide and 3 deep).
MAX_SIZE = 1 << 18  # any tensor dimension (the basis head makes basis x m² values)
MAX_KERNEL = 65
MAX_BASIS = 64
MAX_WIDTH = 1024
MAX_LEVELS = 8
MAX_BLOCKS = 16


def default_available() -> bool:
    return os.path.isfile(DEFAULT_PATH)


@dataclass
class EstimatorOutput:
    kernel_map: torch.Tensor  # [B, m², h, w] on the stride-LEVEL_STRIDE grid (each kernel sums to one)
    level: torch.Tensor  # [B] blur level in [0, 400]
    level_map: torch.Tensor  # [B, 1, h, w]


class BlurEstimator(nn.Module):
    def __init__(self, estimator: KernelEstimator, regressor: BlurLevelRegressor):
        super().__init__()
        if estimator.config.kernel_size != regressor.config.kernel_size:
            raise ValueError(f"M makes {estimator.config.kernel_size}-pixel kernels but T reads {regressor.config.kernel_size}")
        self.estimator = estimator
        self.regressor = regressor

    @property
    def kernel_size(self) -> int:
        return self.estimator.config.kernel_size

    def kernel_grid(self, image: torch.Tensor, tile: int = TILE, overlap: int = OVERLAP,
                    on_tile: Callable[[], None] | None = None) -> torch.Tensor:
        """``[B, 3, H, W]`` → kernel map on the stride-8 grid ``[B, m², ⌈H/8⌉, ⌈W/8⌉]``.

        The image is padded (replicate) to a multiple of 8; above ``tile`` pixels a side M runs tile by
        tile (each tile its own basis) and the tiles' grids are blended over the overlap."""
        s = LEVEL_STRIDE
        h, w = image.shape[-2:]
        ph, pw = (-h) % s, (-w) % s
        padded = F.pad(image, (0, pw, 0, ph), mode="replicate") if ph or pw else image
        device = next(self.parameters()).device

        def run(part: torch.Tensor) -> torch.Tensor:
            estimate = self.estimator(part.to(device))
            return estimate.kernel_map((part.shape[-2] // s, part.shape[-1] // s))

        tile, overlap = _grid_tiling(tile, overlap)
        if max(padded.shape[-2:]) <= tile:
            grid = run(padded)
            if on_tile:
                on_tile()
            return grid
        return tiled_apply(padded, run, tile, overlap, on_tile, scale=s)

    @torch.no_grad()
    def estimate(self, image: torch.Tensor, tile: int = TILE, overlap: int = OVERLAP,
                 on_tile: Callable[[], None] | None = None) -> EstimatorOutput:
        grid = self.kernel_grid(image, tile, overlap, on_tile)
        level_map = self.regressor(grid)
        return EstimatorOutput(grid, level_map.mean((1, 2, 3)), level_map)


def is_estimator_file(path: str) -> bool:
    """A ``.safetensors`` holding M and T (an estimator file or a FideDiff adapter); reads only the header."""
    if not path.lower().endswith(SAFETENSORS_SUFFIXES):
        return False
    header = safetensors_header(path)  # the pack's bounded reader; CheckpointError: skipped, with a log line
    return "estimator.stem.weight" in header and "regressor.inp.weight" in header


def find_estimator_models(root: str) -> list[str]:
    from ..common.discovery import find_models

    return find_models(root, is_model_file=is_estimator_file)


def tile_count(height: int, width: int, tile: int = TILE, overlap: int = OVERLAP) -> int:
    """How many tiles :meth:`BlurEstimator.kernel_grid` runs M on (the node's progress steps)."""
    h, w = math.ceil(height / LEVEL_STRIDE) * LEVEL_STRIDE, math.ceil(width / LEVEL_STRIDE) * LEVEL_STRIDE
    tile, overlap = _grid_tiling(tile, overlap)
    return 1 if max(h, w) <= tile else tiles_covering(h, w, tile, overlap)


def _grid_tiling(tile: int, overlap: int) -> tuple[int, int]:
    """Tile and overlap rounded down to whole grid cells (the overlap at least one cell under the tile)."""
    s = LEVEL_STRIDE
    tile = max(s, tile // s * s)
    return tile, min(overlap // s * s, tile - s)


# -- the file format ---------------------------------------------------------------------------------

def estimator_state(model: BlurEstimator) -> dict[str, torch.Tensor]:
    state = {}
    for prefix, module in (("estimator.", model.estimator), ("regressor.", model.regressor)):
        for key, value in module.state_dict().items():
            state[prefix + key] = value.detach().float().contiguous().cpu()
    return state


def estimator_metadata(model: BlurEstimator) -> dict[str, str]:
    m, t = model.estimator.config, model.regressor.config
    sizes = {**config_dict(m), "regressor_width": t.width, "regressor_layers": t.layers,
             "level_stride": LEVEL_STRIDE, "level_max": LEVEL_MAX}
    return {"fidediff_estimator": json.dumps(sizes)}


def _estimator_config(state: dict, source: str) -> EstimatorConfig:
    stem = shape_of(state, "stem.weight", source)
    levels = count_indexed(state, "encoders.")
    widths = [stem[0]] + [shape_of(state, f"downs.{i}.weight", source)[0] for i in range(levels - 1)]
    basis = shape_of(state, "mix_head.weight", source)[0]
    taps = shape_of(state, "basis_head.2.weight", source)[0]
    size = math.isqrt(taps // basis) if taps % basis == 0 else 0
    if size * size * basis != taps or size % 2 == 0:
        raise CheckpointError(source, f"the basis head makes {taps} values for {basis} kernels: not square odd kernels")
    check_size(source, "the kernel size", size, 1, MAX_KERNEL)
    check_size(source, "the basis kernels", basis, 1, MAX_BASIS)
    check_size(source, "the levels", levels, 1, MAX_LEVELS)
    for width in widths:
        check_size(source, "a width", width, 1, MAX_WIDTH)
    blocks = count_indexed(state, "encoders.0.")
    check_size(source, "the blocks per level", blocks, 0, MAX_BLOCKS)
    return EstimatorConfig(kernel_size=size, basis=basis, widths=tuple(int(v) for v in widths), blocks=blocks)


def _regressor_config(state: dict, source: str) -> RegressorConfig:
    inp = shape_of(state, "inp.weight", source)
    size = math.isqrt(inp[1])
    if size * size != inp[1] or size % 2 == 0:
        raise CheckpointError(source, f"T reads {inp[1]} channels, which is not the taps of an odd square kernel")
    config = RegressorConfig(kernel_size=size, width=inp[0], layers=count_indexed(state, "convs."))
    check_size(source, "T's width", config.width, 1, MAX_WIDTH)
    check_size(source, "T's layers", config.layers, 0, MAX_BLOCKS)
    return config


def estimator_from_state(state: dict[str, torch.Tensor], source: str) -> BlurEstimator:
    """Build M and T from ``estimator.*`` and ``regressor.*`` entries (others ignored), sizes from shapes."""
    parts = {prefix: sub_state(state, prefix) for prefix in PREFIXES}
    missing = [p + "*" for p, s in parts.items() if not s]
    if missing:
        raise CheckpointError(source, f"holds no {' and no '.join(missing)} weights; it is not a FideDiff kernel estimator")
    m_state, t_state = parts["estimator."], parts["regressor."]
    m_source, t_source = source + " [estimator]", source + " [regressor]"
    check_entries(m_state, m_source, MAX_SIZE)
    check_entries(t_state, t_source, MAX_SIZE)
    m_config, t_config = _estimator_config(m_state, m_source), _regressor_config(t_state, t_source)
    estimator = build_checked(lambda: KernelEstimator(m_config), m_state, m_source)
    regressor = build_checked(lambda: BlurLevelRegressor(t_config), t_state, t_source)
    if estimator.config.kernel_size != regressor.config.kernel_size:
        raise CheckpointError(source, f"M makes {estimator.config.kernel_size}x{estimator.config.kernel_size} kernels "
                                      f"but T reads {regressor.config.kernel_size}x{regressor.config.kernel_size}")
    load_strict(estimator, m_state, source + " [estimator]")
    load_strict(regressor, t_state, source + " [regressor]")
    for tensor in list(m_state.values()) + list(t_state.values()):
        if not torch.isfinite(tensor).all():
            raise CheckpointError(source, "holds NaN or infinite weights")
    return BlurEstimator(estimator, regressor).eval()


def load_blur_estimator(path: str) -> BlurEstimator:
    """M and T from an estimator file or a FideDiff adapter file (``.safetensors``; ``.pth`` read weights-only)."""
    path = os.fspath(path)
    state = read_state_dict(path)
    method = read_metadata(path).get("method")
    if method not in (None, METHOD, "fidediff"):
        raise CheckpointError(path, f"is a {method!r} model, not a FideDiff kernel estimator")
    return estimator_from_state(state, path)


def save_blur_estimator(model: BlurEstimator, path: str, extra_metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    metadata = {"method": METHOD, "format_version": "1", **estimator_metadata(model), **(extra_metadata or {})}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file(estimator_state(model), path, metadata=metadata)
