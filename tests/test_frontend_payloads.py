"""What the server sends the frontend: kernel previews (nodes/kernel_ui.py) and the weights help
behind the missing-model panel (nodes/weights_help.py)."""
import base64
import glob
import os
import re

import torch

from conftest import ROOT, pack_module

kernel_ui = pack_module("nodes.kernel_ui")
weights_help = pack_module("nodes.weights_help")
MAPPINGS = pack_module("nodes").NODE_CLASS_MAPPINGS


def decode(entry):
    k, (sh, sw) = entry["size"], entry["shown"]
    data = torch.frombuffer(bytearray(base64.b64decode(entry["data"])), dtype=torch.uint8).float().view(sh, sw, k, k)
    return data / 255 * torch.tensor(entry["peaks"]).view(sh, sw, 1, 1)


def test_a_uniform_kernel_round_trips_within_quantisation():
    kernel = torch.rand(1, 1, 1, 9, 9, generator=torch.Generator().manual_seed(0))
    kernel /= kernel.sum()
    entry = kernel_ui.kernel_ui({"kernels": kernel, "level": [20.0], "info": [{"kind": "camera_shake"}]})["deblur_kernels"][0]
    assert entry["grid"] == [1, 1] and entry["shown"] == [1, 1] and entry["level"] == 20.0
    assert torch.allclose(decode(entry), kernel[0], atol=kernel.max().item() / 255)


def test_a_per_pixel_map_is_thinned_evenly_and_stays_small():
    gh, gw, k = 64, 48, 7
    kernels = torch.zeros(2, gh, gw, k, k)
    rows = torch.arange(gh)[:, None].expand(gh, gw)
    kernels[:, :, :, k // 2, k // 2] = 1.0
    kernels[..., 0, 0] = rows.float()[None] / 100  # mark each cell with its row
    kernels /= kernels.sum((-2, -1), keepdim=True)
    payload = kernel_ui.kernel_ui({"kernels": kernels, "level": None, "info": None})
    entries = payload["deblur_kernels"]
    assert len(entries) == 2 and payload["deblur_kernels_batch"] == [2]
    entry = entries[0]
    sh, sw = entry["shown"]
    assert entry["grid"] == [gh, gw] and sh <= kernel_ui.MAX_CELLS and sw <= kernel_ui.MAX_CELLS
    assert sh * sw * k * k <= kernel_ui.MAX_VALUES
    shown_rows = kernel_ui.cell_indices(gh, sh)
    assert shown_rows[0] > 0 and shown_rows[-1] < gh - 1 and (shown_rows.diff() > 0).all()
    marks = decode(entry)[:, 0, 0, 0] / decode(entry)[:, 0, k // 2, k // 2]
    assert torch.allclose(marks, shown_rows.float() / 100, atol=1 / 255)


def test_only_the_first_images_of_a_batch_are_sent():
    kernels = torch.full((9, 1, 1, 3, 3), 1 / 9)
    payload = kernel_ui.kernel_ui({"kernels": kernels, "level": None, "info": None})
    assert len(payload["deblur_kernels"]) == kernel_ui.MAX_IMAGES and payload["deblur_kernels_batch"] == [9]


def test_every_loader_that_can_find_no_model_has_weights_help(models_dir):
    """A node whose model list is only a "(no …" placeholder in an empty model folder is a loader:
    the frontend can only explain what goes where if weights_help knows it."""
    for name, cls in MAPPINGS.items():
        for input_name, spec in cls.INPUT_TYPES().get("required", {}).items():
            if isinstance(spec[0], list) and len(spec[0]) == 1 and str(spec[0][0]).startswith("(no "):
                assert name in weights_help.LOADERS, f"{name}: add its weights to nodes/weights_help.py"
                entry = weights_help.LOADERS[name]
                assert input_name in (entry["widget"], entry.get("base_widget"))


def test_weights_help_matches_the_documentation_and_the_readme_anchor_exists():
    """Every row agrees with the README's weights table or a method's docs/*.md section (merged into it)."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    documented = readme
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        with open(path, encoding="utf-8") as handle:
            documented += handle.read()
    for loader in weights_help.LOADERS.values():
        for model in loader["models"]:
            assert model["url"] in documented, f"{model['name']}: download link not in the README or docs/"
            assert f"models/deblur/{model['folder']}/" in documented, f"{model['name']}: folder not documented"
    html = weights_help.readme_html(readme)
    assert f'<a id="{weights_help.README_SECTION}"></a>' in html
    assert "<script" not in html.lower().replace("&lt;script", "")


def test_readme_html_escapes_and_anchors_headings():
    html = weights_help.readme_html("# Title & more\ntext <b>\n## Out of memory?")
    assert '<a id="title--more"></a># Title &amp; more' in html
    assert "text &lt;b&gt;" in html
    assert re.search(r'<a id="out-of-memory"></a>## Out of memory\?', html)
