#!/usr/bin/env bash
# Run the pack in ComfyUI's web UI, in the system's headless Chromium (tests/browser/test_browser.py):
#   COMFYUI_PATH           the ComfyUI checkout (default /work/comfyui), with its own venv
#   COMFYUI_FRONTEND_ROOT  optional: another frontend build (the static/ folder of a comfyui-frontend-package wheel)
#   CHROMIUM               the browser (default: chromium on PATH, else /usr/bin/chromium)
#   DEBLUR_SCREENSHOTS     where screenshots go (default docs/images)
#   PYTHON                 the python that runs pytest (default: .venv, venv, else python3)
# Installs playwright-core (npm) into tests/browser/node_modules on first use; never downloads a browser.
set -euo pipefail
cd "$(dirname "$0")/../.."
export COMFYUI_PATH="${COMFYUI_PATH:-/work/comfyui}"
if [[ -z "${PYTHON:-}" ]]; then
    for PYTHON in .venv/bin/python venv/bin/python python3; do
        command -v "$PYTHON" >/dev/null && break
    done
fi
exec "$PYTHON" -m pytest -v tests/browser "$@"
