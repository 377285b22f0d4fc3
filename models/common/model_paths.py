"""Model names confined to the model folders.

A name reaches a loader from a graph (possibly through another pack's string node) or the command
line, so it is hostile: it resolves only to an entry under one of the model folders. Absolute paths,
drive letters and ``..`` are refused after normalisation, and a name that is refused or not found
gets the same message, which never says whether a file exists elsewhere on disk. Links inside a
model folder are followed: putting them there is the user's choice.
"""
from __future__ import annotations

import os
import re
from typing import Sequence

_DRIVE = re.compile(r"^[A-Za-z]:")


def name_parts(name: object) -> list[str] | None:
    """The path components of a model name, or None if it could point outside its folder."""
    if not isinstance(name, str) or not name or "\0" in name or len(name) > 4096:
        return None
    text = name.replace("\\", "/")
    if text.startswith("/") or _DRIVE.match(text) or os.path.isabs(name):
        return None
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return parts


def resolve_model_name(name: object, roots: Sequence[str], hint: str = "") -> str:
    """The path of ``name`` under the first of ``roots`` that has it; FileNotFoundError otherwise."""
    parts = name_parts(name)
    if parts is not None:
        for root in roots:
            path = os.path.join(root, *parts)
            if os.path.exists(path):
                return path
    raise FileNotFoundError(f"model {name!r} not found in {list(roots) or 'any model folder'} (names are relative to the "
                            f"model folders; absolute paths and '..' are not accepted){'; ' + hint if hint else ''}")
