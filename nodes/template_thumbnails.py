"""The bundled workflows' thumbnails, served where the template browser asks for them on every host.

Frontends 1.27 to 1.58 draw a custom node's template card from ``/api/workflow_templates/<folder>/<name>.jpg``
(and use the file name as the card's description, so each thumbnail carries its caption). ComfyUI 0.3.64
serves the whole ``workflows/`` folder there; newer hosts serve only ``<name>.json`` from it, and the
pictures would 404. So the pack answers exactly those picture paths itself, for its own files; the host's
route still answers everything else (the workflows, other packs).
"""
from __future__ import annotations

import os

from . import host

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS_DIR = os.path.join(PACK_DIR, "workflows")
THUMBNAIL_SUFFIX = ".jpg"  # the suffix the frontends request (mediaSubtype "jpg")


def thumbnails(workflows_dir: str = WORKFLOWS_DIR) -> dict[str, str]:
    """Template name → its thumbnail file, for each ``<name>.json`` with a ``<name>.jpg`` beside it."""
    if not os.path.isdir(workflows_dir):
        return {}
    names = sorted(os.path.splitext(n)[0] for n in os.listdir(workflows_dir) if n.endswith(".json"))
    return {n: os.path.join(workflows_dir, n + THUMBNAIL_SUFFIX) for n in names
            if os.path.isfile(os.path.join(workflows_dir, n + THUMBNAIL_SUFFIX))}


def route(folder: str, name: str) -> str:
    """The path the frontends fetch (without ``/api``, which the host adds)."""
    return f"/workflow_templates/{folder}/{name}{THUMBNAIL_SUFFIX}"


def _responder(path: str):
    def respond():
        with open(path, "rb") as picture:
            return picture.read(), "image/jpeg"
    return respond


def register(folder: str = os.path.basename(PACK_DIR)) -> int:
    """Add a route for each thumbnail under the pack's folder name (the host's name for the pack); returns
    how many were added (none outside ComfyUI)."""
    return sum(host.add_get_route(route(folder, name), _responder(path)) for name, path in thumbnails().items())


register()
