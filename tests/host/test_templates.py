"""Template cards on the newest host's template routes, emulated on the real 0.3.64 server.

The newest ``app/custom_node_manager.py`` no longer mounts a pack's workflow folder as static files: its
``/workflow_templates/{module}/{file}`` route, added after every custom node loaded, answers only
``<name>.json``. A stand-in custom node swaps the host's route setup for that behaviour before the
server adds its routes; the frontends still ask for ``<name>.jpg`` at the same place, and the pack's own
thumbnail routes must answer them.
"""
from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from comfy_host import ComfyHost
from test_host import COMFYUI_PATH, OUT, ROOT, get, pytestmark  # noqa: F401 (skipped without a host)

NEWEST_ROUTES = '''\
"""Stand-in: the newest host's custom-node template routes (JSON only, no static folder)."""
import glob
import os

from aiohttp import web

import folder_paths
from app import custom_node_manager


def _templates():
    found = {}
    for root in folder_paths.get_folder_paths("custom_nodes"):
        for folder in ("example_workflows", "example", "examples", "workflow", "workflows"):
            for path in sorted(glob.glob(os.path.join(root, "*", folder, "*.json"))):
                module = os.path.basename(os.path.dirname(os.path.dirname(path)))
                found.setdefault(module, {}).setdefault(os.path.splitext(os.path.basename(path))[0], path)
    return found


def add_routes(self, routes, webapp, loaded_modules):
    @routes.get("/workflow_templates")
    async def listing(request):
        return web.json_response({module: list(names) for module, names in _templates().items()})

    @routes.get("/workflow_templates/{module_name}/{filename}")
    async def template(request):
        filename = request.match_info["filename"]
        names = _templates().get(request.match_info["module_name"], {})
        if not filename.endswith(".json") or filename[:-5] not in names:
            raise web.HTTPNotFound()
        return web.FileResponse(names[filename[:-5]])


custom_node_manager.CustomNodeManager.add_routes = add_routes
NODE_CLASS_MAPPINGS = {}
'''


@pytest.fixture(scope="module")
def newest_host():
    OUT.mkdir(exist_ok=True)
    comfy = ComfyHost(COMFYUI_PATH, ROOT, log_path=OUT / "comfyui_newest_templates.log")
    stand_in = comfy.base / "custom_nodes" / "newest_template_routes"
    stand_in.mkdir()
    (stand_in / "__init__.py").write_text(NEWEST_ROUTES)
    with comfy:
        yield comfy


def status(host, path):
    try:
        with urllib.request.urlopen(host.url + path, timeout=30) as reply:
            return reply.status
    except urllib.error.HTTPError as error:
        return error.code


def test_cards_keep_their_thumbnails_where_the_host_serves_only_json(newest_host):
    host = newest_host
    names = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))
    assert sorted(json.loads(get(host, "/api/workflow_templates")[0])[host.pack_name]) == names
    for name in names:
        served = json.loads(get(host, f"/api/workflow_templates/{host.pack_name}/{name}.json")[0])
        assert served == json.loads((ROOT / "workflows" / f"{name}.json").read_text())
        picture, kind = get(host, f"/api/workflow_templates/{host.pack_name}/{name}.jpg")
        assert kind == "image/jpeg" and picture == (ROOT / "workflows" / f"{name}.jpg").read_bytes(), name
    # the stand-in answers there, not 0.3.64's static folder (which would serve workflows/api/ too)
    assert status(host, f"/api/workflow_templates/{host.pack_name}/api/{names[0]}.json") == 404
