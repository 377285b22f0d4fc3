"""The Stable Diffusion 2.x bases the user already has, in the host's folders (FideDiff, OSDD).

Choices are ``checkpoints/<file>`` (the host's checkpoints folders: single-file models; the WebUI's
``models/Stable-diffusion``), ``diffusers/<folder>`` (diffusers folders) and ``deblur/<file>`` (the
pack's own model files that a method registered as holding an SD base: DeblurDiff's model). A choice resolves only to a path
inside one of those folders. Folders come from ``common/runtime.py``, so every host shares this.
"""
from __future__ import annotations

import os

from ..common import runtime
from ..common.discovery import find_models
from .base import CHECKPOINT_SUFFIXES, base_file_reader, is_diffusers_folder

KINDS = ("checkpoints", "diffusers", "deblur")


def base_roots(kind: str) -> list[str]:
    return runtime.model_dirs() if kind == "deblur" else runtime.host_model_dirs(kind)


def is_checkpoint_file(path: str) -> bool:
    return path.lower().endswith(CHECKPOINT_SUFFIXES) and not is_method_file(path)


def is_method_file(path: str) -> bool:
    return base_file_reader(path) is not None


def _find(kind: str, root: str) -> list[str]:
    if kind == "checkpoints":
        return find_models(root, is_model_file=is_checkpoint_file)
    if kind == "diffusers":
        return find_models(root, is_model_folder=is_diffusers_folder)
    return find_models(root, is_model_file=is_method_file)


def base_choices() -> list[str]:
    names = []
    for kind in KINDS:
        for root in base_roots(kind):
            names += [f"{kind}/{n}" for n in _find(kind, root) if f"{kind}/{n}" not in names]
    return names


def choices_named(file_name: str) -> list[str]:
    """The choices whose file or folder is called ``file_name`` (how an adapter finds the base it
    recorded); the name is only compared, never joined into a path."""
    return [c for c in base_choices() if c.rsplit("/", 1)[-1] == file_name]


def resolve_base(choice: str) -> str:
    """The path of a listed base; never outside the kind's folders."""
    kind, _, name = choice.partition("/")
    if kind not in KINDS or not name:
        raise FileNotFoundError(f"base model {choice!r}: expected 'checkpoints/…', 'diffusers/…' or 'deblur/…'")
    for root in base_roots(kind):
        root = os.path.abspath(root)
        path = os.path.normpath(os.path.join(root, *name.split("/")))  # links the user made are followed
        if os.path.commonpath([root, path]) == root and path != root and os.path.exists(path):
            return path
    raise FileNotFoundError(f"base model {choice!r} not found in {base_roots(kind) or 'any ' + kind + ' folder'}")
