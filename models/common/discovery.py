"""Listing the models of one kind under a model folder, for the loaders' drop-down lists."""
from __future__ import annotations

import os
from typing import Callable


def find_models(root: str, is_model_folder: Callable[[str], bool] | None = None,
                is_model_file: Callable[[str], bool] | None = None) -> list[str]:
    """Names relative to ``root`` ('/'-separated, sorted case-insensitively) of the folders and
    files under it that the predicates accept; hidden folders are skipped, links followed."""
    found = []
    if not os.path.isdir(root):
        return found
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(folder, root)
        if is_model_folder and rel != "." and is_model_folder(folder):
            found.append(rel.replace(os.sep, "/"))
        if is_model_file:
            found += [os.path.normpath(os.path.join(rel, name)).replace(os.sep, "/")
                      for name in files if is_model_file(os.path.join(folder, name))]
    return sorted(found, key=str.lower)
