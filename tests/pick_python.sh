# Sourced by the tests/*/run_*.sh scripts from the repository root: PYTHON (the python that runs pytest),
# unless already set, becomes the first of .venv/bin/python, venv/bin/python, python3 that exists.
if [[ -z "${PYTHON:-}" ]]; then
    for PYTHON in .venv/bin/python venv/bin/python python3; do
        command -v "$PYTHON" >/dev/null && break
    done
fi
