"""Every bundled workflow names only existing node types and inputs, its UI and API forms agree,
and the API graph runs through our node classes."""
import os

import pytest
import torch

from conftest import pack_module
from tiny_models import compact_upscale, prepare_models
from workflow_graph import api_workflows, load, node_spec, ui_to_api, ui_workflows

MAPPINGS = pack_module("nodes").NODE_CLASS_MAPPINGS
AUDIO = {"waveform": torch.zeros(1, 1, 4410), "sample_rate": 44100}  # ComfyUI's AUDIO
SOURCE_FPS = 12.5  # unlike any fps widget value, so only a link from Get Video Components carries it


def test_every_ui_workflow_has_an_api_twin():
    names = {os.path.basename(p) for p in ui_workflows()}
    assert names and names == {os.path.basename(p) for p in api_workflows()}


@pytest.mark.parametrize("path", ui_workflows(), ids=os.path.basename)
def test_ui_workflow_is_valid_and_matches_its_api_twin(path):
    ui = load(path)
    node_ids = {node["id"] for node in ui["nodes"]}
    for link_id, source, source_slot, target, target_slot, kind in ui["links"]:
        assert source in node_ids and target in node_ids
        source_node = next(n for n in ui["nodes"] if n["id"] == source)
        assert node_spec(source_node["type"], MAPPINGS)[2][source_slot] == kind
    for node in ui["nodes"]:
        _inputs, widgets, _ = node_spec(node["type"], MAPPINGS)
        assert len(node.get("widgets_values", [])) == len(widgets), node["type"]
    twin = load(os.path.join(os.path.dirname(path), "api", os.path.basename(path)))
    strip = lambda graph: {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in graph.items()}
    assert ui_to_api(ui, MAPPINGS) == strip(twin)


@pytest.mark.parametrize("path", api_workflows(), ids=os.path.basename)
def test_api_workflow_names_existing_inputs(path):
    for node_id, node in load(path).items():
        inputs, _, _ = node_spec(node["class_type"], MAPPINGS)
        assert set(node["inputs"]) <= set(inputs), (node_id, node["class_type"])
        required = node_spec(node["class_type"], MAPPINGS)[0]
        if node["class_type"] in MAPPINGS:
            required = MAPPINGS[node["class_type"]].INPUT_TYPES()["required"]
        assert set(required) <= set(node["inputs"]), (node_id, "missing inputs")


def run_api_graph(graph: dict, image: torch.Tensor, models_root=None) -> dict:
    """Execute an API graph with our node classes; LoadImage yields ``image``, SaveImage collects,
    ComfyUI's upscale-model nodes load ``models_root/upscale_models/<name>`` and apply it as the host would."""
    results, saved = {}, {}

    def value(v):
        return results[v[0]][v[1]] if isinstance(v, list) else v

    def run(node_id):
        if node_id in results:
            return
        node = graph[node_id]
        for v in node["inputs"].values():
            if isinstance(v, list):
                run(v[0])
        args = {k: value(v) for k, v in node["inputs"].items()}
        kind = node["class_type"]
        if kind == "LoadImage":
            results[node_id] = (image, torch.zeros(image.shape[:3]))
        elif kind == "UpscaleModelLoader":
            path = os.path.join(models_root, "upscale_models", args["model_name"])
            results[node_id] = (torch.load(path, weights_only=True)["params"],)
        elif kind == "ImageUpscaleWithModel":
            results[node_id] = (compact_upscale(args["upscale_model"], args["image"]),)
        elif kind == "LoadVideo":  # a stand-in for the host's VIDEO: the frames (``image`` as a batch), sound, rate
            results[node_id] = ({"images": image, "audio": AUDIO, "fps": SOURCE_FPS},)
        elif kind == "GetVideoComponents":
            results[node_id] = (args["video"]["images"], args["video"]["audio"], args["video"]["fps"])
        elif kind == "CreateVideo":
            results[node_id] = ({"images": args["images"], "audio": args.get("audio"), "fps": args["fps"]},)
        elif kind == "SaveVideo":
            saved[node_id] = args["video"]
            results[node_id] = ()
        elif kind == "PreviewAny":
            results[node_id] = ()
        elif kind in ("SaveImage", "PreviewImage"):
            saved[node_id] = args["images"]
            results[node_id] = ()
        else:
            cls = MAPPINGS[kind]
            out = getattr(cls(), cls.FUNCTION)(**args)
            results[node_id] = out["result"] if isinstance(out, dict) else out  # {"ui": ..., "result": ...}

    for node_id in graph:
        run(node_id)
    return saved


@pytest.mark.parametrize("path", api_workflows(), ids=os.path.basename)
def test_api_workflow_runs_through_the_nodes(path, models_dir, monkeypatch):
    monkeypatch.setenv("COMFYUI_DEBLUR_CHECKPOINTS", str(models_dir.parent / "checkpoints"))  # as ComfyUI's models/checkpoints
    prepare_models(models_dir.parent)  # tiny models wherever the bundled loaders point
    graph = load(path)
    frames = 3 if any(n["class_type"] == "LoadVideo" for n in graph.values()) else 1  # a video is a batch
    image = torch.rand(frames, 29, 35, 3, generator=torch.Generator().manual_seed(0))
    saved = run_api_graph(graph, image, models_dir.parent)
    assert saved
    for node_id, output in saved.items():
        if isinstance(output, dict):  # a video: the source's rate and sound come through with every frame
            assert output["fps"] == SOURCE_FPS and output["audio"] is AUDIO
            output = output["images"]
        scale = 4 ** upscales_upstream(graph, node_id)  # the tiny upscale model is x4
        assert output.shape == (frames, 29 * scale, 35 * scale, 3) and 0 <= output.min() and output.max() <= 1
        if scale == 1:
            assert not torch.equal(output, image)


def upscales_upstream(graph: dict, node_id: str) -> int:
    """How many ImageUpscaleWithModel nodes feed ``node_id`` (along its first image input chain)."""
    count, seen, frontier = 0, set(), [node_id]
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        count += graph[current]["class_type"] == "ImageUpscaleWithModel"
        frontier += [v[0] for v in graph[current]["inputs"].values() if isinstance(v, list)]
    return count


@pytest.mark.parametrize("path", ui_workflows(), ids=os.path.basename)
def test_ui_workflow_sells_itself_in_the_templates_menu(path):
    """Issue 10: the Templates card shows the file name and <name>.jpg (ComfyUI serves the workflows
    folder; both frontends ask for <name>.jpg): a name a search for "deblur" finds, a thumbnail, a
    one-line description (drawn on the thumbnail), and no saved view, so the graph opens fitted."""
    ui = load(path)
    name = os.path.splitext(os.path.basename(path))[0]
    assert "deblur" in name.lower()
    description = (ui.get("extra") or {}).get("description", "")
    assert 20 <= len(description) <= 110 and "\n" not in description and "needs" in description
    assert "ds" not in (ui.get("extra") or {}), "a saved view offset: the workflow would not open fitted"
    thumbnail = os.path.join(os.path.dirname(path), name + ".jpg")
    assert os.path.isfile(thumbnail), f"no Templates thumbnail {thumbnail} (tools/make_template_thumbnails.py)"
    from PIL import Image

    with Image.open(thumbnail) as image:
        assert image.format == "JPEG" and image.size == (512, 384)
