"""Safe, explicit checkpoint reading.

Only ``torch.load(weights_only=True)`` and safetensors are used, so a checkpoint can never run code.
Every failure is a :class:`CheckpointError` that names the file and says what is wrong, instead of a
stack trace from deep inside torch or pickle.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import struct
import zipfile
from typing import Mapping

import torch

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
# Wrappers used by BasicSR ("params", "params_ema"), Lightning ("state_dict") and others.
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net")
# Bounds on what is read to classify or open a file, far above any real model's (a DeblurDiff
# header is ~0.3 MB, its data.pkl ~0.5 MB): a hostile file costs at most this much, once.
MAX_HEADER_BYTES = 16 * 2**20
MAX_ZIP_DIRECTORY_BYTES = 16 * 2**20
MAX_ZIP_ENTRIES = 200_000
MAX_PICKLE_BYTES = 64 * 2**20
MAX_DIMENSIONS = 8  # of one tensor
# Bytes per element of each safetensors dtype (the format's own list).
SAFETENSORS_ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                          "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


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
    metadata = safetensors_header(path).get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(path, "not a readable safetensors file (its metadata is not a table of strings)")
    return metadata


def safetensors_header(path: str | os.PathLike) -> dict:
    """The JSON header of a ``.safetensors`` file, read without touching the tensors (at most
    :data:`MAX_HEADER_BYTES`), checked against the file's size so a truncated file is named as such."""
    path = os.fspath(path)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(8)
            length = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if length < 2 or length > MAX_HEADER_BYTES or 8 + length > size:
                raise CheckpointError(path, _not_safetensors(head, length, size))
            text = handle.read(length)
    except OSError as error:
        raise CheckpointError(path, f"cannot be read ({_short(error)})") from None
    try:
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise CheckpointError(path, "not a readable safetensors file (its header is not JSON; corrupted?)") from None
    if not isinstance(header, dict):
        raise CheckpointError(path, "not a readable safetensors file (its header is not a table)")
    ends = [_checked_entry(path, key, entry) for key, entry in header.items() if key != "__metadata__"]
    if 8 + length + max(ends, default=0) > size:
        raise CheckpointError(path, "the file is truncated (an interrupted download?): its header describes "
                                    f"{8 + length + max(ends)} bytes, the file has {size}")
    return header


def _checked_entry(path: str, key: str, entry) -> int:
    """The end offset of one tensor of a header, after checking that its dtype is known, its shape
    is a short list of sizes and its data span holds exactly the bytes the shape and dtype need."""
    def bad(problem):
        raise CheckpointError(path, f"the tensor {key[:120]!r} {problem}; the file is damaged or was not written by safetensors")

    if not isinstance(entry, dict):
        bad("has no description in the header")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in SAFETENSORS_ITEM_BYTES:
        bad(f"has an unknown dtype {str(dtype)[:20]!r}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMENSIONS or \
            not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        bad(f"has an unreadable shape {str(shape)[:60]}")
    if not isinstance(offsets, list) or len(offsets) != 2 or \
            not all(isinstance(n, int) and not isinstance(n, bool) for n in offsets) or not 0 <= offsets[0] <= offsets[1]:
        bad("has bad data offsets")
    needed = math.prod(shape) * SAFETENSORS_ITEM_BYTES[dtype]
    if needed != offsets[1] - offsets[0]:
        bad(f"is declared {dtype} {tuple(shape)} ({needed} bytes) but its data holds {offsets[1] - offsets[0]} bytes")
    return offsets[1]


def _not_safetensors(head: bytes, length: int, size: int) -> str:
    if head[:1] in (b"<", b"{") or head[:5].lower() == b"<!doc":
        return f"not a safetensors file (it starts with {head[:8]!r}; a web page saved by mistake?)"
    if length > MAX_HEADER_BYTES and 8 + length <= size:
        return f"not a usable safetensors file (its header claims {length} bytes, more than the {MAX_HEADER_BYTES} accepted)"
    return "not a safetensors file, or truncated (an interrupted download?)"


def torch_zip_pickle(path: str | os.PathLike) -> bytes:
    """The ``data.pkl`` of a zip-format PyTorch checkpoint, without unpickling or inflating anything.

    ``torch.save`` stores every entry uncompressed, so a compressed entry means the file was not
    written by torch (a zip bomb costs nothing here); the zip directory and the pickle are read
    only up to :data:`MAX_ZIP_DIRECTORY_BYTES` and :data:`MAX_PICKLE_BYTES`."""
    path = os.fspath(path)
    infos = _torch_zip_entries(path)
    pickles = [info for info in infos if info.filename == "data.pkl" or info.filename.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise CheckpointError(path, "not a PyTorch checkpoint (a zip without exactly one data.pkl)")
    if pickles[0].file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(path, f"its data.pkl is {pickles[0].file_size} bytes, more than the {MAX_PICKLE_BYTES} accepted")
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(pickles[0])
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(path, f"the file is truncated or corrupted ({_short(error)})") from None


def _torch_zip_entries(path: str) -> list[zipfile.ZipInfo]:
    """The entries of a zip checkpoint after bounding its directory, all of them stored uncompressed."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as handle:
            entries, directory = _zip_directory_size(path, handle, size)
        if entries > MAX_ZIP_ENTRIES or directory > MAX_ZIP_DIRECTORY_BYTES:
            raise CheckpointError(path, f"its zip directory lists {entries} entries in {directory} bytes, more than any checkpoint")
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
    except (OSError, zipfile.BadZipFile, EOFError, struct.error) as error:
        raise CheckpointError(path, f"the file is truncated or corrupted ({_short(error)})") from None
    compressed = [info.filename for info in infos if info.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise CheckpointError(path, f"not written by torch.save: {len(compressed)} compressed entries (e.g. {compressed[0]!r}); "
                                    "refusing to inflate it")
    return infos


def _zip_directory_size(path: str, handle, size: int) -> tuple[int, int]:
    """(entries, bytes) of the zip's central directory from its end record (zip64 aware)."""
    tail_length = min(size, 22 + 65535)
    handle.seek(size - tail_length)
    tail = handle.read(tail_length)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise CheckpointError(path, "the file is truncated or corrupted (no zip directory at its end; an interrupted download?)")
    entries, directory = struct.unpack("<HI", tail[at + 10:at + 16])
    if (entries == 0xFFFF or directory == 0xFFFFFFFF) and at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":
        (record,) = struct.unpack("<Q", tail[at - 12:at - 4])
        handle.seek(record)
        zip64 = handle.read(56)
        if len(zip64) < 56 or zip64[:4] != b"PK\x06\x06":
            raise CheckpointError(path, "the file is truncated or corrupted (a broken zip64 directory)")
        entries, directory = struct.unpack("<QQ", zip64[32:48])
    return entries, directory


def _read_safetensors(path: str) -> dict:
    from safetensors.torch import load_file

    safetensors_header(path)  # names a truncated or foreign file before safetensors sees it
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
    if head.startswith(b"PK"):
        _torch_zip_entries(path)  # bounded directory, nothing compressed: torch.load inflates nothing
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
