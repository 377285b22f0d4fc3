"""Make docs/images/webui_extras_deblur.png: the Extras step in a real WebUI (Forge), headless.

    WEBUI_PATH=/work/forge python tests/webui/screenshot_extras.py [OUT.png]

Needs the system's Chromium (Debian package ``chromium``) and ``npm ci`` in tests/browser/.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from webui_host import WebUIHost  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PHOTO = ROOT / "example_images" / "deblur_example_cat_blurred.png"


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "images" / "webui_extras_deblur.png").resolve()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("error: no chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    log = ROOT / "tests" / "webui" / "out" / "webui_ui.log"
    with WebUIHost(os.environ.get("WEBUI_PATH", "/work/forge"), ROOT, ui=True, log_path=log) as webui:
        reply = subprocess.run(["node", str(ROOT / "tests" / "webui" / "extras_screenshot.mjs"), webui.url, chromium,
                                str(PHOTO), str(out)], capture_output=True, text=True, timeout=600)
        if reply.returncode:
            print(reply.stdout, reply.stderr, webui.log_tail(), sep="\n", file=sys.stderr)
            return 1
    result = json.loads(reply.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
