"""Choosing a Stable Diffusion 2.x base among the files the user already has (FideDiff, OSDD).

Choices are ``checkpoints/<file>`` (ComfyUI's checkpoints folders: single-file models),
``diffusers/<folder>`` (ComfyUI's diffusers folders) and ``deblur/<file>`` (DeblurDiff's model,
whose UNet and autoencoder are SD 2.1's). A choice resolves only to a path inside one of those
folders.
"""
from __future__ import annotations

import os

from ..models.common.discovery import find_models
from ..models.deblurdiff import is_deblurdiff_file
from ..models.sd21.base import CHECKPOINT_SUFFIXES, is_diffusers_folder
from . import host

KINDS = ("checkpoints", "diffusers", "deblur")


def _roots(kind: str) -> list[str]:
    return host.model_dirs() if kind == "deblur" else host.host_model_dirs(kind)


def _find(kind: str, root: str) -> list[str]:
    if kind == "checkpoints":
        return find_models(root, is_model_file=lambda p: p.lower().endswith(CHECKPOINT_SUFFIXES)
                           and not is_deblurdiff_file(p))
    if kind == "diffusers":
        return find_models(root, is_model_folder=is_diffusers_folder)
    return find_models(root, is_model_file=is_deblurdiff_file)


def base_choices() -> list[str]:
    names = []
    for kind in KINDS:
        for root in _roots(kind):
            names += [f"{kind}/{n}" for n in _find(kind, root) if f"{kind}/{n}" not in names]
    return names


def resolve_base(choice: str) -> str:
    """The path of a listed base; never outside the kind's folders."""
    kind, _, name = choice.partition("/")
    if kind not in KINDS or not name:
        raise FileNotFoundError(f"base model {choice!r}: expected 'checkpoints/…', 'diffusers/…' or 'deblur/…'")
    for root in _roots(kind):
        root = os.path.abspath(root)
        path = os.path.normpath(os.path.join(root, *name.split("/")))  # links the user made are followed
        if os.path.commonpath([root, path]) == root and path != root and os.path.exists(path):
            return path
    raise FileNotFoundError(f"base model {choice!r} not found in {_roots(kind) or 'any ' + kind + ' folder'}")
