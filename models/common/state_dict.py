"""Reading architecture sizes off a state dict and loading it strictly with readable errors."""
from __future__ import annotations

import re

import torch
from torch import nn

from .checkpoint import CheckpointError


def count_indexed(state: dict, prefix: str) -> int:
    """Number of consecutive ``{prefix}{i}.`` entries (i = 0, 1, ...), e.g. blocks of a ModuleList."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in state for m in [pattern.match(key)] if m}
    count = 0
    while count in indices:
        count += 1
    return count


def sub_state(state: dict, prefix: str) -> dict:
    """The entries under ``prefix`` with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def shape_of(state: dict, key: str, source: str) -> torch.Size:
    """Shape of a required entry; a missing one means the file is not this architecture."""
    if key not in state:
        raise CheckpointError(source, f"missing the entry {key!r}; this is not the expected architecture")
    return state[key].shape


def require_finite(state: dict, source: str, chunk: int = 1 << 24) -> None:
    """Refuse NaN or infinite weights (they give black images with no other sign), checked in
    chunks so a multi-gigabyte state needs no second copy."""
    for key, value in state.items():
        if not value.is_floating_point():
            continue
        flat = value.reshape(-1)
        for start in range(0, flat.numel(), chunk):
            if not torch.isfinite(flat[start:start + chunk]).all():
                raise CheckpointError(source, f"the entry {key!r} holds NaN or infinite values; the file is damaged "
                                              "(or a training run diverged): use another copy")


def load_strict(module: nn.Module, state: dict, source: str, limit: int = 5, assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` with a message that lists what disagrees, first few only.

    ``assign=True`` adopts the given tensors instead of copying into the module's (for modules built
    on the meta device, which then need no memory or random initialisation of their own)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
        if items:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    if problems:
        raise CheckpointError(source, "does not match the architecture; " + "; ".join(problems))
    module.load_state_dict(state, strict=True, assign=assign)
