#!/usr/bin/env bash
# Run the pack inside a real ComfyUI (tests/host/test_host.py). Needs a ComfyUI checkout with its own venv:
#   COMFYUI_PATH    the checkout (default /work/comfyui)
#   COMFYUI_PYTHON  the server's python (default $COMFYUI_PATH/venv/bin/python)
#   PYTHON          the python that runs pytest, with the pack's requirements (default: .venv, venv, else python3)
# Extra arguments go to pytest. Server logs and saved images land in tests/host/out/.
set -euo pipefail
cd "$(dirname "$0")/../.."
export COMFYUI_PATH="${COMFYUI_PATH:-/work/comfyui}"
. tests/pick_python.sh
exec "$PYTHON" -m pytest -v tests/host "$@"
