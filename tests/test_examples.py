"""The example photos: documented, loaded by the bundled workflows, and copied into ComfyUI's input
folder without ever overwriting a user's file."""
import os

import pytest

from conftest import ROOT, pack_module
from workflow_graph import api_workflows, load, ui_workflows

EXAMPLES = os.path.join(ROOT, "example_images")
# ComfyUI serves /api/workflow_templates/<pack>/ from the first of these folders that exists in a pack
# (app/custom_node_manager.py): any of them beside workflows/ would hide our workflows from the
# Templates menu.
COMFY_TEMPLATE_FOLDERS = ["example_workflows", "example", "examples", "workflow", "workflows"]


def example_names():
    return sorted(n for n in os.listdir(EXAMPLES) if n.lower().endswith((".png", ".jpg", ".jpeg", ".webp", ".mp4")))


def test_every_example_has_its_provenance_and_licence_recorded():
    with open(os.path.join(EXAMPLES, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    assert example_names()
    for name in example_names():
        row = next((line for line in readme.splitlines() if f"`{name}`" in line), None)
        assert row is not None, f"{name} is not described in example_images/README.md"
        assert any(word in row for word in ("CC0", "public domain", "BSD")), f"{name}: no licence in its row"


@pytest.mark.parametrize("path", ui_workflows() + api_workflows(), ids=lambda p: os.path.relpath(p, ROOT))
def test_bundled_workflows_load_an_example_photo(path):
    graph = load(path)
    nodes = graph["nodes"] if "nodes" in graph else [
        {"type": n["class_type"], "widgets_values": [n["inputs"].get("image", n["inputs"].get("file"))]} for n in graph.values()]
    for node in nodes:
        if node["type"] in ("LoadImage", "LoadVideo"):
            assert node["widgets_values"][0] in example_names(), f"{node['widgets_values'][0]} is not an example photo"


def test_only_workflows_is_a_template_folder():
    present = [name for name in COMFY_TEMPLATE_FOLDERS if os.path.isdir(os.path.join(ROOT, name))]
    assert present == ["workflows"], f"{present}: ComfyUI would serve templates from {present[0]} only"


def test_examples_are_copied_into_the_input_folder_once_and_never_over_a_users_file(tmp_path):
    host = pack_module("nodes.host")
    input_dir = tmp_path / "input"
    mine = input_dir / example_names()[0]
    input_dir.mkdir()
    mine.write_bytes(b"the user's own file")

    copied = host.copy_examples(str(input_dir))

    assert copied == example_names()[1:]
    assert mine.read_bytes() == b"the user's own file"
    for name in copied:
        with open(os.path.join(EXAMPLES, name), "rb") as original:
            assert (input_dir / name).read_bytes() == original.read()
    assert host.copy_examples(str(input_dir)) == []


def test_outside_comfyui_nothing_is_copied(monkeypatch):
    host = pack_module("nodes.host")
    monkeypatch.setattr(host, "copy_examples", lambda *a: pytest.fail("copied outside ComfyUI"))
    assert host.install_examples() == []


def test_pictures_in_the_frontend_docs_exist():
    import re

    for doc in ("frontend.md", "troubleshooting.md"):
        with open(os.path.join(ROOT, "docs", doc), encoding="utf-8") as handle:
            for picture in re.findall(r"\]\((images/[^)]+)\)", handle.read()):
                assert os.path.isfile(os.path.join(ROOT, "docs", picture)), f"docs/{doc} shows {picture}, which is missing"
