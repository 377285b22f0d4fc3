"""Reading bundled workflows: the UI format (what the Templates menu and drag-and-drop load) and the
API format (what /prompt takes), checked against the node classes, and run through them."""
from __future__ import annotations

import glob
import json
import os

from conftest import ROOT

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
# The ComfyUI core nodes our workflows use: (inputs in order, widget names in UI order; None = a
# widget the API does not carry, such as LoadImage's upload button), outputs.
CORE_NODES = {
    "LoadImage": ({"image": "COMBO"}, ["image", None], ["IMAGE", "MASK"]),
    "SaveImage": ({"images": "IMAGE", "filename_prefix": "STRING"}, ["filename_prefix"], []),
    "PreviewImage": ({"images": "IMAGE"}, [], []),
    "PreviewAny": ({"source": "*"}, [], []),  # comfy_extras/nodes_preview_any.py (its text box is not saved)
    # comfy_extras/nodes_upscale_model.py
    "UpscaleModelLoader": ({"model_name": "COMBO"}, ["model_name"], ["UPSCALE_MODEL"]),
    "ImageUpscaleWithModel": ({"upscale_model": "UPSCALE_MODEL", "image": "IMAGE"}, [], ["IMAGE"]),
    # comfy_extras/nodes_video.py as of 0.3.64; 0.38 adds only optional inputs (LoadVideo's edit, CreateVideo's
    # bit_depth/color_space/codec) and outputs after these (GetVideoComponents' bit_depth, color_space)
    "LoadVideo": ({"file": "COMBO"}, ["file", None], ["VIDEO"]),
    "GetVideoComponents": ({"video": "VIDEO"}, [], ["IMAGE", "AUDIO", "FLOAT"]),
    "CreateVideo": ({"images": "IMAGE", "fps": "FLOAT", "audio": "AUDIO"}, ["fps"], ["VIDEO"]),
    "SaveVideo": ({"video": "VIDEO", "filename_prefix": "STRING", "format": "COMBO", "codec": "COMBO"},
                  ["filename_prefix", "format", "codec"], []),
}


def ui_workflows() -> list[str]:
    return sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))


def api_workflows() -> list[str]:
    return sorted(glob.glob(os.path.join(ROOT, "workflows", "api", "*.json")))


def load(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def node_spec(node_type: str, mappings: dict) -> tuple[dict, list, list]:
    """(input name → type, UI widget names, output types) of a node type."""
    if node_type in CORE_NODES:
        return CORE_NODES[node_type]
    cls = mappings[node_type]
    declared = {**cls.INPUT_TYPES().get("required", {}), **cls.INPUT_TYPES().get("optional", {})}
    inputs, widgets = {}, []
    for name, (kind, *options) in declared.items():
        is_combo = isinstance(kind, (list, tuple))
        inputs[name] = "COMBO" if is_combo else kind
        if is_combo or kind in WIDGET_TYPES:
            widgets.append(name)
            if options and options[0].get("control_after_generate"):
                widgets.append(None)
    return inputs, widgets, list(cls.RETURN_TYPES)


def ui_to_api(ui: dict, mappings: dict) -> dict:
    """The API graph a UI-format workflow stands for (as the frontend would queue it)."""
    links = {link[0]: link for link in ui["links"]}
    graph = {}
    for node in ui["nodes"]:
        _inputs, widgets, _outputs = node_spec(node["type"], mappings)
        values = dict((name, value) for name, value in zip(widgets, node.get("widgets_values", [])) if name)
        for slot in node.get("inputs", []):
            if slot.get("link") is not None:
                _, source, source_slot, *_ = links[slot["link"]]
                values[slot["name"]] = [str(source), source_slot]
        graph[str(node["id"])] = {"class_type": node["type"], "inputs": values}
    return graph
