#!/usr/bin/env bash
# Run the repository as an extension inside a real WebUI (tests/webui/test_webui_host.py).
#   WEBUI_PATH    the checkout (default /work/forge; make one with tests/webui/setup_forge.sh)
#   WEBUI_PYTHON  the WebUI's python (default $WEBUI_PATH/venv/bin/python)
#   PYTHON        the python that runs pytest, with the pack's requirements (default: .venv, venv, else python3)
# Extra arguments go to pytest. The WebUI's log and the route's output land in tests/webui/out/.
set -euo pipefail
cd "$(dirname "$0")/../.."
export WEBUI_PATH="${WEBUI_PATH:-/work/forge}"
. tests/pick_python.sh
exec "$PYTHON" -m pytest -v -s tests/webui/test_webui_host.py "$@"
