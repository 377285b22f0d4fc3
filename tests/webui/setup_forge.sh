#!/usr/bin/env bash
# Set up a Forge checkout for the WebUI harness from fetched snapshots (no network needed except the
# package registry for the venv).
#
#   bash tests/webui/setup_forge.sh FORGE_SNAPSHOT HF_GUESS_SNAPSHOT [DEST] [ASSETS_SNAPSHOT]
#
# FORGE_SNAPSHOT / HF_GUESS_SNAPSHOT: git directories (or clones) of lllyasviel/stable-diffusion-webui-forge
# and lllyasviel/huggingface_guess. ASSETS_SNAPSHOT (optional): AUTOMATIC1111/stable-diffusion-webui-assets,
# the UI's fonts and styles; the API alone runs without it, the gradio UI needs at least its folder
# (made empty when no snapshot is given). DEST (default /work/forge) receives the checkout and DEST/venv a
# Python 3.11 venv with Forge's pinned requirements and torch 2.3.1 (Forge's own torch/torchvision pin).
# Afterwards run the harness with:
#   WEBUI_PATH=DEST WEBUI_PYTHON=DEST/venv/bin/python python -m pytest tests/webui
set -euo pipefail
forge_src=${1:?forge snapshot path}
guess_src=${2:?huggingface_guess snapshot path}
dest=${3:-/work/forge}
assets_src=${4:-}
python=${PYTHON311:-python3.11}

if [ ! -d "$dest/.git" ]; then
    git clone --quiet "$forge_src" "$dest"
fi
if [ ! -d "$dest/repositories/huggingface_guess/.git" ]; then
    mkdir -p "$dest/repositories"
    git clone --quiet "$guess_src" "$dest/repositories/huggingface_guess"
fi
assets="$dest/repositories/stable-diffusion-webui-assets"
if [ -n "$assets_src" ] && [ ! -d "$assets/.git" ]; then
    rm -rf "$assets"
    git clone --quiet "$assets_src" "$assets"
fi
mkdir -p "$assets"
if [ ! -x "$dest/venv/bin/python" ]; then
    "$python" -m venv "$dest/venv"
fi
pip=("$dest/venv/bin/python" -m pip install --progress-bar off)
# Forge's launch_utils pins torch 2.3.1 / torchvision 0.18.1; install those first so the requirements
# below do not pull a different torch.
"${pip[@]}" "torch==2.3.1" "torchvision==0.18.1"
"${pip[@]}" -r "$dest/requirements_versions.txt"
echo "Forge ready in $dest (python: $dest/venv/bin/python)"
