"""Listing the models of one kind under a model folder, for the loaders' drop-down lists.

The lists are built on every ``/object_info`` request and every prompt check, and a model folder is
user-controlled, so the walk is bounded (depth, entries, symlink loops cut by real path), each file
is classified by its header once per size and modification time, and a whole listing is reused
until one of the folders it walked, or a file it could not read, changes (ComfyUI caches its own
model lists by folder times too). A file that
cannot be classified is skipped with one log line and never breaks the listing.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from typing import Callable

from .checkpoint import CheckpointError

log = logging.getLogger(__name__)

MAX_DEPTH = 8  # folders below a model root
MAX_ENTRIES = 20_000  # folder entries looked at per listing

Predicate = Callable[[str], bool]
Stamp = tuple[int, int] | None  # (size, modification time) of a folder or file; None if it cannot be read
_listings: dict[tuple, tuple[dict[str, Stamp], list[str]]] = {}
_verdicts: dict[tuple, tuple[Stamp, bool]] = {}
_unreadable: dict[tuple, Stamp] = {}  # files skipped for an error: watched, so a fixed copy is listed
_reported: set[tuple] = set()


def find_models(root: str, is_model_folder: Predicate | None = None, is_model_file: Predicate | None = None) -> list[str]:
    """Names relative to ``root`` ('/'-separated, sorted case-insensitively) of the folders and files
    under it that the predicates accept; hidden entries are skipped, links followed once each.

    A predicate raises :class:`CheckpointError` for a file it cannot read (logged once, skipped) and
    returns False for a readable file of another kind. Pass module-level functions: the cache is
    keyed by them."""
    key = (os.path.abspath(root), is_model_folder, is_model_file)
    cached = _listings.get(key)
    if cached is not None and _unchanged(cached[0]):
        return list(cached[1])
    folders, names = _walk(root, is_model_folder, is_model_file)
    _listings[key] = (folders, names)
    return list(names)


def clear_cache() -> None:
    _listings.clear()
    _verdicts.clear()
    _unreadable.clear()


def _stamp(path: str) -> Stamp:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns


def _unchanged(watched: dict[str, Stamp]) -> bool:
    return all(_stamp(path) == stamp for path, stamp in watched.items())


def _walk(root: str, is_model_folder: Predicate | None, is_model_file: Predicate | None) -> tuple[dict[str, Stamp], list[str]]:
    """(folders walked and unreadable files met, with their stamps; names found)."""
    watched: dict[str, Stamp] = {}
    found: list[str] = []
    seen: set[str] = set()
    budget = MAX_ENTRIES
    pending = deque([(root, "", 0)])  # breadth first: of two links to one folder, the shorter name is kept
    while pending:
        folder, rel, depth = pending.popleft()
        try:
            watched[folder] = _stamp(folder)
            real = os.path.realpath(folder)
            if real in seen:
                _report(("loop", real), "deblur: %s leads back to %s (a link loop); not walked again", folder, real)
                continue
            seen.add(real)
            with os.scandir(folder) as scan:
                entries = sorted((e for e in scan if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:
            watched.setdefault(folder, None)
            continue
        if rel and is_model_folder and _verdict(is_model_folder, folder, None):
            found.append(rel)
        for entry in entries[:budget]:
            name = f"{rel}/{entry.name}" if rel else entry.name
            try:
                if entry.is_dir():
                    if depth < MAX_DEPTH:
                        pending.append((entry.path, name, depth + 1))
                elif is_model_file and entry.is_file():
                    if _verdict(is_model_file, entry.path, entry):
                        found.append(name)
                    elif (is_model_file, entry.path) in _unreadable:
                        watched[entry.path] = _unreadable[(is_model_file, entry.path)]
            except OSError:
                continue
        budget -= min(len(entries), budget)
        if budget <= 0:
            _report(("entries", root), "deblur: stopped listing %s after %d entries", root, MAX_ENTRIES)
            break
    return watched, sorted(found, key=str.lower)


def _verdict(predicate: Predicate, path: str, entry: os.DirEntry | None) -> bool:
    """``predicate(path)``, remembered while the file's size and modification time stay the same."""
    try:
        info = entry.stat() if entry is not None else os.stat(path)
    except OSError:
        return False
    signature: Stamp = (info.st_size, info.st_mtime_ns)
    key = (predicate, path)
    cached = _verdicts.get(key)
    if cached is not None and cached[0] == signature:
        return cached[1]
    _unreadable.pop(key, None)
    try:
        result = bool(predicate(path))
    except CheckpointError as error:
        _unreadable[key] = signature
        _report((path, signature, error.problem), "deblur: skipped %s: %s", path, error.problem)
        result = False
    except Exception as error:  # a model list must survive any file
        _unreadable[key] = signature
        _report((path, signature, repr(error)), "deblur: skipped %s: %s", path, error)
        result = False
    _verdicts[key] = (signature, result)
    return result


def _report(key: tuple, message: str, *args) -> None:
    if key not in _reported:
        _reported.add(key)
        log.warning(message, *args)
