"""What the frontend shows on a loader that finds no model: which files go in which folder.

Served as JSON at ``/deblur/weights`` (the rows of the README's weights table, with the model folders
this ComfyUI really searches), and the README itself at ``/deblur/readme`` so the node can link to
its weights section offline and for the installed version.
"""
from __future__ import annotations

import html
import json
import os
import re

from ..models import methods
from . import host

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")
WEIGHTS_ROUTE = "/deblur/weights"
README_ROUTE = "/deblur/readme"
README_SECTION = "weights"

# Loader node type → the models it can load (the README's weights table, same order).
LOADERS = {
    **{loader: {"method": method.name, "widget": "model_name", "alternative": method.alternative, "models": method.weights}
       for loader, method in (("HIDiffLoader", methods.HIDIFF), ("DeblurDiffLoader", methods.DEBLURDIFF))},
    "FideDiffLoader": {
        "method": "FideDiff",
        "widget": "adapter",
        "base_widget": "base",  # the SD 2.1 base: ComfyUI's own checkpoints folder
        "alternative": ("no official weights exist: train an adapter with tools/train_fidediff.py (README, FideDiff); "
                        "the base is Stable Diffusion 2.1 in ComfyUI's models/checkpoints"),
        "models": [],
    },
    "OSDDLoader": {
        "method": "OSDD",
        "widget": "weights",
        "base_widget": "base",
        "alternative": ("no official weights exist (the authors released none): train them with tools/train_osdd.py "
                        "(README, OSDD); the base is Stable Diffusion 2.1 in ComfyUI's models/checkpoints"),
        "models": [],
    },
}


def weights_help() -> dict:
    return {
        "model_folders": host.model_dirs(),
        "folder_name": host.MODEL_FOLDER,
        "readme": f"{README_ROUTE}#{README_SECTION}",
        "loaders": LOADERS,
    }


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def readme_html(text: str) -> str:
    """The README as preformatted text with an anchor at every heading (no Markdown renderer needed)."""
    lines = []
    for line in text.splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        escaped = html.escape(line)
        lines.append(f'<a id="{html.escape(slug(heading[1]))}"></a>{escaped}' if heading else escaped)
    body = "\n".join(lines)
    return ("<!doctype html><meta charset='utf-8'><title>Diffusion Deblur: README</title>"
            "<style>body{font:14px/1.5 system-ui,sans-serif;margin:2em;max-width:110ch}"
            "pre{white-space:pre-wrap}</style><pre>" + body + "</pre>")


def _serve_readme():
    try:
        with open(README, encoding="utf-8") as handle:
            return readme_html(handle.read()), "text/html"
    except OSError:
        return "README.md is missing from this installation.", "text/plain"


host.add_get_route(WEIGHTS_ROUTE, lambda: (json.dumps(weights_help()), "application/json"))
host.add_get_route(README_ROUTE, _serve_readme)
