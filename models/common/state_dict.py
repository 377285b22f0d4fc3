"""Reading architecture sizes off a state dict and loading it strictly with readable errors.

Sizes come from a file's shapes (spandrel-style), and a file is untrusted, so a loader checks the
entries first (:func:`check_entries`: no empty dimension, no integer data where weights belong, every
size within the architecture's bound) and builds a network sized from them with
:func:`build_checked`: first on the meta device (no memory), compared with the file, and only then
for real. A network that matches the file holds what the file holds, so its memory is bounded by the
file's size; a hostile header gets a named error at the cost of reading it.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, TypeVar

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


def check_entries(state: dict, source: str, max_size: int, integer: Iterable[str] = ()) -> None:
    """Refuse, naming the entry, an empty dimension (``[2000, 3, 0, 3]`` holds no bytes but would
    size a network), a dimension above ``max_size`` (the architecture's bound), and integer or
    boolean data except in entries ending with one of ``integer`` (a float weight relabelled as an
    integer dtype loads as garbage that gives black images)."""
    integer = tuple(integer)
    for key, value in state.items():
        shape = tuple(value.shape)
        if 0 in shape:
            raise CheckpointError(source, f"the entry {key!r} has an empty dimension {shape}; the file is damaged")
        if any(n > max_size for n in shape):
            raise CheckpointError(source, f"the entry {key!r} has shape {shape}, beyond this architecture's bound of "
                                          f"{max_size} a dimension; the file is damaged or not this architecture")
        if not (value.is_floating_point() or key.endswith(integer)):
            raise CheckpointError(source, f"the entry {key!r} holds {str(value.dtype).replace('torch.', '')} data where "
                                          "weights are floating point; the file is damaged or was rewritten")


def check_size(source: str, what: str, value: int, low: int, high: int) -> None:
    """A size read from the shapes (a count, a kernel size, a group) within its architectural range."""
    if not low <= value <= high:
        raise CheckpointError(source, f"its shapes give {what} = {value}, outside {low}..{high}; "
                                      "the file is damaged or not this architecture")


Module = TypeVar("Module", bound=nn.Module)


def build_checked(build: Callable[[], Module], state: dict, source: str) -> Module:
    """``build()`` once on the meta device, compared with ``state`` (names, shapes, floating point,
    as :func:`load_strict`), then for real: what the file's shapes describe is checked before any
    memory is spent on it."""
    try:
        with torch.device("meta"):
            probe = build()
    except CheckpointError:
        raise
    except (ValueError, ZeroDivisionError, RuntimeError, TypeError, IndexError, OverflowError) as error:
        raise CheckpointError(source, f"its shapes describe no network of this architecture ({type(error).__name__}: "
                                      f"{str(error)[:160]})") from None
    check_matches(probe, state, source)
    del probe
    return build()


def check_matches(module: nn.Module, state: dict, source: str, limit: int = 5) -> None:
    """Raise :class:`CheckpointError` listing (first few) what disagrees between ``module`` and ``state``:
    missing and unexpected keys, shapes, and non-floating data for a floating-point entry."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    not_float = [f"{k}: file {str(state[k].dtype).replace('torch.', '')}" for k, v in expected.items()
                 if k in state and v.is_floating_point() and not state[k].is_floating_point()]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched),
                         ("integer data where weights are floating point", not_float)):
        if items:
            more = f" and {len(items) - limit} more" if len(items) > limit else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
    if problems:
        raise CheckpointError(source, "does not match the architecture; " + "; ".join(problems))


def load_strict(module: nn.Module, state: dict, source: str, limit: int = 5, assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` with a message that lists what disagrees, first few only.

    ``assign=True`` adopts the given tensors instead of copying into the module's (for modules built
    on the meta device, which then need no memory or random initialisation of their own)."""
    check_matches(module, state, source, limit)
    module.load_state_dict(state, strict=True, assign=assign)
