#!/usr/bin/env bash
# Run the pack in ComfyUI's web UI, in the system's headless Chromium (tests/browser/test_browser.py):
#   COMFYUI_PATH           the ComfyUI checkout (default /work/comfyui), with its own venv
#   COMFYUI_FRONTEND_ROOT  optional: another frontend build (the static/ folder of a comfyui-frontend-package wheel)
#   CHROMIUM               the browser (default: chromium on PATH, else /usr/bin/chromium)
#   DEBLUR_SCREENSHOTS     where screenshots go (default docs/images)
#   PYTHON                 the python that runs pytest (default: .venv, venv, else python3)
# --newest: also check against the newest frontend from PyPI (pip download comfyui-frontend-package into
#   tests/browser/out/frontend; the layout test then runs on the host's frontend and on that one).
# Installs playwright-core (npm) into tests/browser/node_modules on first use; never downloads a browser.
set -euo pipefail
cd "$(dirname "$0")/../.."
export COMFYUI_PATH="${COMFYUI_PATH:-/work/comfyui}"
. tests/pick_python.sh
if [[ "${1:-}" == "--newest" ]]; then
    shift
    dest=tests/browser/out/frontend
    rm -rf "$dest" && mkdir -p "$dest"
    "$COMFYUI_PATH/venv/bin/python" -m pip download -q --no-deps comfyui-frontend-package -d "$dest"
    "$PYTHON" -m zipfile -e "$dest"/comfyui_frontend_package-*.whl "$dest/unpacked"
    export COMFYUI_FRONTEND_ROOT="$PWD/$dest/unpacked/comfyui_frontend_package/static"
fi
exec "$PYTHON" -m pytest -v tests/browser "$@"
