"""Choosing a Stable Diffusion 2.x base among the files the user already has (FideDiff, OSDD loaders):
the listing lives in ``models/sd21/base_files.py``, shared with the method registry."""
from ..models.sd21.base_files import KINDS, base_choices, resolve_base

__all__ = ["KINDS", "base_choices", "resolve_base"]
