"""Safe, explicit checkpoint reading.

Only ``torch.load(weights_only=True)`` and safetensors are used, so a checkpoint can never run code.
Every failure is a :class:`CheckpointError` that names the file and says what is wrong, instead of a
stack trace from deep inside torch or pickle.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from typing import Mapping

import torch

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
# Wrappers used by BasicSR ("params", "params_ema"), Lightning ("state_dict") and others.
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, with a message meant for the user."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def read_state_dict(path: str | os.PathLike, prefer_key: str | None = None, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Read a flat ``name -> tensor`` dict from ``.safetensors`` or a weights-only pickle.

    Unwraps ``{'params': ...}``-style containers (``prefer_key`` first) and strips DataParallel's
    ``module.`` prefix. ``mmap=True`` maps a (zip-format) pickle instead of reading it into memory,
    for multi-gigabyte checkpoints whose tensors are converted or adopted right away.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(path, "file not found")
    if os.path.getsize(path) == 0:
        raise CheckpointError(path, "the file is empty (an interrupted download?)")
    lower = path.lower()
    if lower.endswith(SAFETENSORS_SUFFIXES):
        data = _read_safetensors(path)
    elif lower.endswith(PICKLE_SUFFIXES):
        data = _read_pickle(path, mmap)
    else:
        raise CheckpointError(path, "unknown checkpoint type; expected .safetensors or .pth/.pt/.ckpt/.bin")
    return _flatten(path, data, prefer_key)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file ({} for other files)."""
    path = os.fspath(path)
    if not path.lower().endswith(SAFETENSORS_SUFFIXES):
        return {}
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # safetensors raises its own error types
        raise CheckpointError(path, f"not a readable safetensors file ({_short(error)})") from None


def _read_safetensors(path: str) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except Exception as error:
        raise CheckpointError(path, f"not a readable safetensors file, truncated or corrupted ({_short(error)})") from None


def _read_pickle(path: str, mmap: bool = False):
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise CheckpointError(path, "the file is truncated or corrupted (an interrupted download?)")
    if not head.startswith((b"PK", b"\x80")):
        raise CheckpointError(path, f"not a PyTorch checkpoint (it starts with {head!r}; a web page saved by mistake?)")
    try:
        if mmap and head.startswith(b"PK"):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        if "Unsupported global" in text or "Unsupported class" in text or "GLOBAL" in text:
            raise CheckpointError(
                path,
                "the file contains pickled Python objects that need code to load; refusing to run it. "
                "Only plain weight files are accepted (convert it to .safetensors with a trusted tool).",
            ) from None
        raise CheckpointError(path, f"not a PyTorch checkpoint ({_short(error)})") from None
    except (EOFError, OSError, zipfile.BadZipFile) as error:
        raise CheckpointError(path, f"the file is truncated or corrupted ({_short(error)})") from None
    except RuntimeError as error:
        text = str(error)
        if "PytorchStreamReader" in text or "zip archive" in text or "central directory" in text:
            raise CheckpointError(path, "the file is truncated or not a PyTorch checkpoint") from None
        raise CheckpointError(path, f"could not be read by torch.load ({_short(error)})") from None


def _flatten(path: str, data, prefer_key: str | None) -> dict[str, torch.Tensor]:
    if not isinstance(data, Mapping):
        raise CheckpointError(path, f"holds a {type(data).__name__}, not a dict of weights")
    keys = ([prefer_key] if prefer_key else []) + list(WRAPPER_KEYS)
    for key in keys:
        inner = data.get(key)
        if isinstance(inner, Mapping) and inner:
            data = inner
            break
    bad = [k for k, v in data.items() if not isinstance(v, torch.Tensor)]
    if bad or not data:
        raise CheckpointError(path, "does not hold a state dict of tensors" + (f" (e.g. entry {bad[0]!r})" if bad else " (it is empty)"))
    return {(k[7:] if k.startswith("module.") else k): v for k, v in data.items()}


def _short(error: Exception, limit: int = 160) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
