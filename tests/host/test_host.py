"""The pack inside a real ComfyUI server: it imports, registers its nodes, serves its frontend and
templates, puts its example photos where LoadImage finds them, and runs every bundled API workflow,
one of them checked against the pack run directly.

Skipped unless COMFYUI_PATH names a ComfyUI checkout with its own venv (see run_host_tests.sh).
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfy_host import ComfyHost

ROOT = Path(__file__).resolve().parents[2]
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
OUT = Path(__file__).resolve().parent / "out"
WORKFLOWS = sorted((ROOT / "workflows" / "api").glob("*.json"))
EXAMPLES = sorted(p for p in (ROOT / "example_images").glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
EXAMPLE_VIDEOS = sorted((ROOT / "example_images").glob("*.mp4"))
VIDEO_PROBE = Path(__file__).resolve().parent / "video_probe.py"  # run with the host's python, which has PyAV
MIN_DEBLUR_CHANGE = 3.0  # mean 8-bit levels between source and saved frames: H.264 re-encoding alone gives 2.1, the workflow 4.0
WORKFLOW_TIMEOUT = float(os.environ.get("COMFYUI_WORKFLOW_TIMEOUT", 600))
TINY_MODELS = ROOT / "tests" / "tiny_models.py"
UPSCALE_FACTOR = 4  # of the tiny upscale model tests/tiny_models.py writes
GOLDEN_WORKFLOW = "hidiff_deblur"

pytestmark = pytest.mark.skipif(not COMFYUI_PATH, reason="host tests need COMFYUI_PATH: a ComfyUI checkout with "
                                "a venv (or COMFYUI_PYTHON); run tests/host/run_host_tests.sh")


@pytest.fixture(scope="module")
def host():
    OUT.mkdir(exist_ok=True)
    comfy = ComfyHost(COMFYUI_PATH, ROOT, log_path=OUT / "comfyui.log")
    if TINY_MODELS.exists():  # before start-up, so the loaders list the models from the first request
        from tiny_models import prepare_models

        prepare_models(comfy.models_dir)
    with comfy:
        yield comfy


def get(host, path):
    with urllib.request.urlopen(host.url + path, timeout=30) as reply:
        return reply.read(), reply.headers.get_content_type()


def test_pack_imports_and_registers_every_node(host, pack):
    assert "-" in host.pack_name, "the pack must load from a folder name no import statement could spell"
    assert not host.import_failed(), f"ComfyUI failed to import the pack:\n{host.log_tail()}"
    assert pack.NODE_CLASS_MAPPINGS, "the pack exports no NODE_CLASS_MAPPINGS"
    served = host.object_info()
    for name, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert name in served, f"node {name} missing from /object_info"
        info = served[name]
        assert info["output"] == list(cls.RETURN_TYPES), name
        for section, inputs in cls.INPUT_TYPES().items():
            for input_name, spec in inputs.items():
                assert input_name in info["input"].get(section, {}), f"{name}: {section} input {input_name} not served"
                if isinstance(spec[0], str):  # a type name; combo choices depend on the model folder
                    assert info["input"][section][input_name][0] == spec[0], f"{name}.{input_name}"


def test_example_photos_are_in_the_input_folder_and_listed_by_load_image(host):
    listed = host.object_info()["LoadImage"]["input"]["required"]["image"][0]
    for example in EXAMPLES:
        copied = host.input_dir / example.name
        assert copied.read_bytes() == example.read_bytes(), f"{example.name} was not copied into input/ at start-up"
        assert example.name in listed


def test_example_video_is_in_the_input_folder_and_listed_by_load_video(host):
    kind, *options = host.object_info()["LoadVideo"]["input"]["required"]["file"]
    listed = options[0]["options"] if kind == "COMBO" else kind  # a V3 node's combo: ["COMBO", {"options": [...]}]
    assert EXAMPLE_VIDEOS
    for example in EXAMPLE_VIDEOS:
        assert (host.input_dir / example.name).read_bytes() == example.read_bytes(), f"{example.name} not copied"
        assert example.name in listed


def test_frontend_extension_routes_and_templates_are_served(host):
    extensions = json.loads(get(host, "/extensions")[0])
    entry = f"/extensions/{host.pack_name}/deblur.js"
    assert entry in extensions
    script, kind = get(host, entry)
    assert kind in ("application/javascript", "text/javascript") and b"registerExtension" in script

    help_ = json.loads(get(host, "/api/deblur/weights")[0])
    assert str(host.models_dir / "deblur") in help_["model_folders"]
    readme, kind = get(host, help_["readme"].split("#")[0])
    assert kind == "text/html" and f'id="{help_["readme"].split("#")[1]}"'.encode() in readme

    templates = json.loads(get(host, "/api/workflow_templates")[0])
    names = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    assert sorted(templates.get(host.pack_name, [])) == names
    for name in names:
        served = json.loads(get(host, f"/api/workflow_templates/{host.pack_name}/{name}.json")[0])
        assert served == json.loads((ROOT / "workflows" / f"{name}.json").read_text())
        for prefix in ("/api", ""):  # the host's static folder (0.3.64, /api only) and the pack's own route
            picture, kind = get(host, f"{prefix}/workflow_templates/{host.pack_name}/{name}.jpg")
            assert kind == "image/jpeg" and picture == (ROOT / "workflows" / f"{name}.jpg").read_bytes(), name


@pytest.mark.parametrize("workflow", WORKFLOWS or [pytest.param(None, marks=pytest.mark.skip(
    reason="no workflows/api/*.json in the pack yet"))], ids=lambda p: p.stem if p else "none")
def test_workflow_runs_and_saves_sane_images(host, workflow):
    if not TINY_MODELS.exists():
        pytest.fail("tests/tiny_models.py with prepare_models(models_dir) is missing: the harness cannot give the "
                    "workflow's loaders any model")
    prompt = json.loads(workflow.read_text())
    for node in prompt.values():
        if node["class_type"] in ("LoadImage", "LoadVideo"):
            name = node["inputs"].get("image", node["inputs"].get("file"))
            assert (host.input_dir / name).exists(), f"{name}: the workflow loads a file not in ComfyUI's input folder"

    history = host.wait(host.queue(prompt), WORKFLOW_TIMEOUT)

    keep = OUT / workflow.stem
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir()
    saved = 0
    for node_id, output in history["outputs"].items():
        for image in output.get("images", []):
            path = host.base / image["type"] / image["subfolder"] / image["filename"]
            if image["type"] != "output":
                continue
            saved += 1
            shutil.copy(path, keep)
            if path.suffix.lower() in (".mp4", ".webm", ".mkv"):
                _check_saved_video(host, prompt, node_id, path)
                continue
            expected = _expected_size(host, prompt, node_id)
            with Image.open(path) as picture:
                assert picture.mode == "RGB", f"{path.name}: mode {picture.mode}"
                if expected:
                    assert picture.size == expected, f"{path.name}: {picture.size}, expected {expected}"
                extrema = picture.getextrema()
                assert any(low < high for low, high in extrema), f"{path.name} is one flat colour {extrema}"
        _check_frontend_payloads(host, output)
    assert saved, f"{workflow.name} saved no image"


def test_hidiff_workflow_saves_what_the_pack_computes_directly(host, pack, monkeypatch):
    """Ties the host run to the golden-tested pipeline: the PNG that ComfyUI saved equals the pack's own
    HI-Diff output for the same photo and model, within one 8-bit level (torch versions differ)."""
    from conftest import pack_module

    prompt = json.loads((ROOT / "workflows" / "api" / f"{GOLDEN_WORKFLOW}.json").read_text())
    history = host.wait(host.queue(prompt), WORKFLOW_TIMEOUT)
    (saved,) = host.output_images(history)

    hidiff = pack_module("nodes.hidiff")
    loader_inputs = next(n["inputs"] for n in prompt.values() if n["class_type"] == "HIDiffLoader")
    deblur_inputs = next(n["inputs"] for n in prompt.values() if n["class_type"] == "HIDiffDeblur")
    photo = next(n["inputs"]["image"] for n in prompt.values() if n["class_type"] == "LoadImage")
    monkeypatch.setenv("COMFYUI_DEBLUR_MODELS", str(host.models_dir / "deblur"))  # names resolve only in model folders
    (model,) = hidiff.HIDiffLoader().load(loader_inputs["model_name"], loader_inputs["precision"])
    with Image.open(host.input_dir / photo) as picture:  # as LoadImage reads it
        image = np.asarray(picture.convert("RGB"), dtype=np.float32) / 255.0
    import torch

    (restored,) = hidiff.HIDiffDeblur().deblur(model, torch.from_numpy(image)[None], deblur_inputs["seed"],
                                               deblur_inputs["tile_size"], deblur_inputs["tile_overlap"])
    direct = np.clip(255.0 * restored[0].numpy(), 0, 255).astype(np.uint8)  # as SaveImage writes it
    with Image.open(saved) as picture:
        from_host = np.asarray(picture, dtype=np.int16)
    difference = np.abs(from_host - direct.astype(np.int16))
    (OUT / "golden_check.json").write_text(json.dumps({
        "workflow": GOLDEN_WORKFLOW, "photo": photo, "size": list(direct.shape),
        "max_level_difference": int(difference.max()), "pixels_differing": int((difference > 0).sum())}))
    assert difference.max() <= 1, f"host output differs from the pack's by up to {difference.max()} levels"


def test_viewer_and_kernel_payloads_reach_the_frontend(host):
    """Deblur Compare sends both images (saved as temp previews, unresized) and Blur Kernel Preview the
    kernels, through ComfyUI's own history, whatever the bundled workflows contain."""
    sharp = EXAMPLES[[p.name for p in EXAMPLES].index("deblur_example_cat_sharp.png")]
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": sharp.name}},
        "2": {"class_type": "SyntheticMotionBlur", "inputs": {"image": ["1", 0], "seed": 3, "intensity": 0.6,
                                                              "kernel_size": 21, "noise": 0.0, "regions": 2}},
        "3": {"class_type": "DeblurCompare", "inputs": {"image_a": ["2", 0], "image_b": ["1", 0], "mode": "split",
                                                        "split_position": 0.5, "label_a": "blurred", "label_b": "sharp"}},
        "4": {"class_type": "BlurKernelPreview", "inputs": {"kernel": ["2", 1], "size": 64}},
    }
    outputs = host.wait(host.queue(prompt), WORKFLOW_TIMEOUT)["outputs"]

    (compare,) = outputs["3"]["deblur_compare"]
    assert compare["labels"] == ["blurred", "sharp"]
    with Image.open(sharp) as original:
        size = original.size
    for side in ("before", "after"):
        image = compare[side]
        assert image["type"] == "temp"
        with Image.open(host.base / "temp" / image["subfolder"] / image["filename"]) as picture:
            assert picture.size == size
    with Image.open(host.base / "temp" / compare["after"]["subfolder"] / compare["after"]["filename"]) as picture, \
            Image.open(sharp) as original:
        assert np.array_equal(np.asarray(picture), np.asarray(original.convert("RGB"))), "the after image is the input, unchanged"
    (kernels,) = outputs["4"]["deblur_kernels"]
    assert kernels["size"] == 21 and kernels["grid"] == [2, 2] and kernels["shown"] == [2, 2]
    _check_frontend_payloads(host, outputs["3"])
    _check_frontend_payloads(host, outputs["4"])


def _expected_size(host, prompt, node_id):
    """(width, height) a SaveImage should write: its photo's size times the upscale factors upstream;
    None if the graph does not say (several photos, or no photo)."""
    photos, upscales, seen, frontier = set(), 0, set(), [node_id]
    while frontier:
        current = frontier.pop()
        if current in seen:
            continue
        seen.add(current)
        node = prompt[current]
        if node["class_type"] == "LoadImage":
            photos.add(node["inputs"]["image"])
        upscales += node["class_type"] == "ImageUpscaleWithModel"
        frontier += [v[0] for v in node["inputs"].values() if isinstance(v, list)]
    if len(photos) != 1 or any(prompt[n]["class_type"] not in _SIZE_KEEPING | {"LoadImage", "SaveImage"} for n in seen):
        return None
    with Image.open(host.input_dir / photos.pop()) as picture:
        width, height = picture.size
    factor = UPSCALE_FACTOR ** upscales
    return width * factor, height * factor


# Nodes whose IMAGE output has its input's size (anything else on the path: size not checked).
_SIZE_KEEPING = {"HIDiffLoader", "HIDiffDeblur", "HIDiffPrior", "HIDiffRestore", "SyntheticMotionBlur",
                 "DeblurDiffLoader", "DeblurDiffSampler", "DeblurDiffEncode", "LKPNStep", "DeblurDiffDecode",
                 "UpscaleModelLoader", "ImageUpscaleWithModel"}


def _check_saved_video(host, prompt, node_id, path):
    """A saved video keeps its source's frames (count, rate, size) and sound, and the deblur changed them."""
    sources = {n["inputs"]["file"] for n in _upstream(prompt, node_id) if n["class_type"] == "LoadVideo"}
    assert len(sources) == 1, f"{path.name}: expected one Load Video upstream, found {sources}"
    probe = subprocess.run([str(host.python), str(VIDEO_PROBE), str(host.input_dir / sources.pop()), str(path)],
                           capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    report = json.loads(probe.stdout)
    (OUT / f"{path.stem}_probe.json").write_text(json.dumps(report, indent=1))
    source, saved = report["source"], report["saved"]
    for key in ("frames", "fps", "width", "height"):
        assert saved[key] == source[key], f"{path.name}: {key} {saved[key]}, the source has {source[key]}"
    assert saved["audio_streams"] == 1 and saved["audio_seconds"] >= 0.9 * source["audio_seconds"] > 0, report
    assert report["mean_abs_difference"] >= MIN_DEBLUR_CHANGE, f"{path.name}: frames barely changed {report}"


def _upstream(prompt, node_id):
    seen, frontier = set(), [node_id]
    while frontier:
        current = frontier.pop()
        if current not in seen:
            seen.add(current)
            frontier += [v[0] for v in prompt[current]["inputs"].values() if isinstance(v, list)]
    return [prompt[n] for n in seen]


def _check_frontend_payloads(host, output):
    """What our nodes send the frontend refers to files that exist and decodes to the sizes it states."""
    for entry in output.get("deblur_compare", []):
        for side in ("before", "after"):
            image = entry[side]
            path = host.base / image["type"] / image["subfolder"] / image["filename"]
            with Image.open(path) as picture:
                assert picture.format == "PNG"
    for entry in output.get("deblur_kernels", []):
        k, (rows, cols) = entry["size"], entry["shown"]
        assert len(base64.b64decode(entry["data"])) == rows * cols * k * k
        assert len(entry["peaks"]) == rows * cols


def test_blur_kernel_estimate_runs_the_bundled_estimator_on_the_real_photo(host):
    """Blur Kernel Estimate with the bundled estimator (no download) on the real blurred photo: its
    kernels reach Blur Kernel Preview and the frontend, the level map is saved."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "deblur_example_clock_motion.png"}},
        "2": {"class_type": "BlurKernelEstimate", "inputs": {"image": ["1", 0], "estimator": "(bundled) fidediff_estimator_synthetic",
                                                             "tile_size": 512}},
        "3": {"class_type": "BlurKernelPreview", "inputs": {"kernel": ["2", 0], "size": 64}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["2", 2]}},
    }
    outputs = host.wait(host.queue(prompt), WORKFLOW_TIMEOUT)["outputs"]
    (kernels,) = outputs["2"]["deblur_kernels"]
    assert kernels["size"] == 19 and kernels["grid"] == [38, 50]  # 300 x 400 px, one kernel per 8 x 8
    assert 0 <= kernels["level"] <= 400
    (preview,) = outputs["4"]["images"]
    with Image.open(host.base / "temp" / preview["subfolder"] / preview["filename"]) as picture:
        assert picture.size[0] == 400 and picture.size[1] > 300
    _check_frontend_payloads(host, outputs["2"])


def test_blur_kernel_deconvolve_undoes_true_and_estimated_kernels(host):
    """Blur Kernel Deconvolve in the real host: the true kernel of Synthetic Motion Blur (the oracle) brings
    the saved cat several dB closer to the sharp photo; Blur Kernel Estimate's per-pixel map of the real
    clock runs tiled and saves an image of the input's size."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "deblur_example_cat_sharp.png"}},
        "2": {"class_type": "SyntheticMotionBlur", "inputs": {"image": ["1", 0], "seed": 3, "intensity": 0.6, "kernel_size": 31, "noise": 0.005}},
        "3": {"class_type": "BlurKernelDeconvolve", "inputs": {"image": ["2", 0], "kernel": ["2", 1], "method": "total_variation",
                                                              "strength": 0.001, "colour_space": "stored values", "tile_size": 512}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "blurred_cat"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "deconvolved_cat"}},
        "6": {"class_type": "LoadImage", "inputs": {"image": "deblur_example_clock_motion.png"}},
        "7": {"class_type": "BlurKernelEstimate", "inputs": {"image": ["6", 0], "estimator": "(bundled) fidediff_estimator_synthetic",
                                                             "tile_size": 512}},
        "8": {"class_type": "BlurKernelDeconvolve", "inputs": {"image": ["6", 0], "kernel": ["7", 0], "method": "wiener",
                                                              "strength": 0.01, "colour_space": "linear light (photos)", "tile_size": 256}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "deconvolved_clock"}},
    }
    outputs = host.wait(host.queue(prompt), WORKFLOW_TIMEOUT)["outputs"]

    def saved(node):
        (entry,) = outputs[node]["images"]
        with Image.open(host.base / "output" / entry["subfolder"] / entry["filename"]) as picture:
            return np.asarray(picture.convert("RGB"), dtype=np.float64)

    with Image.open(ROOT / "example_images" / "deblur_example_cat_sharp.png") as picture:
        sharp = np.asarray(picture.convert("RGB"), dtype=np.float64)

    def psnr(x):
        return 10 * np.log10(255 ** 2 / np.mean((x - sharp) ** 2))

    assert psnr(saved("5")) > psnr(saved("4")) + 3
    assert saved("9").shape == (300, 400, 3)
