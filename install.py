"""Installs what the pack needs and the host lacks; run by the Automatic1111-family WebUIs (which run an
extension's ``install.py``, not its ``requirements.txt``) and by ComfyUI-Manager.

Only missing packages are installed. A package that is already there is never upgraded or downgraded,
even when its version is outside ``requirements.txt``'s range: the WebUI pins its own versions (Forge:
diffusers 0.31.0, safetensors 0.4.2, Pillow 9.5.0, numpy 1.26.2, ...) and re-installs them when they
change. torch is the host's and is never installed from here.
"""
from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys

REQUIREMENTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "requirements.txt")
HOST_PACKAGES = {"torch", "torchvision", "torchaudio"}
NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def read_requirements(path: str | None = None) -> list[tuple[str, str]]:
    """(distribution name, requirement as written) for each line, comments dropped."""
    found = []
    with open(path or REQUIREMENTS, encoding="utf-8") as handle:
        for line in handle:
            spec = line.split("#", 1)[0].strip()
            match = NAME.match(spec)
            if match:
                found.append((match[1], spec))
    return found


def installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def outside_range(spec: str, version: str) -> bool:
    try:
        from packaging.requirements import Requirement
    except ImportError:
        return False
    return not Requirement(spec).specifier.contains(version, prereleases=True)


def to_install(requirements: list[tuple[str, str]]) -> list[str]:
    """The requirements that are missing (host packages excluded); notes those installed outside the range."""
    missing = []
    for name, spec in requirements:
        version = installed_version(name)
        if version is None:
            if name.lower() not in HOST_PACKAGES:
                missing.append(spec)
        elif outside_range(spec, version):
            print(f"diffusion-deblur: keeping {name} {version} as installed (asked for {spec}); report a problem if it misbehaves")
    return missing


def pip_install(spec: str) -> None:
    try:
        import launch  # the WebUI's installer helpers (its pip, index and flags)
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", spec])
    else:
        launch.run_pip(f'install "{spec}"', f"{spec} for diffusion-deblur")


def main() -> None:
    for spec in to_install(read_requirements()):
        pip_install(spec)


if __name__ == "__main__":
    main()
