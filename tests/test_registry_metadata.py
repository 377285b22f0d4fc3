"""pyproject.toml as the Comfy Registry reads it (its rules as comfy-cli's config parser applies them), and
the package's own description of itself."""
import ast
import os
import re
import tomllib

from conftest import ROOT

METHODS = ("HI-Diff", "DeblurDiff", "FideDiff", "OSDD")
HOST_PACKAGES = {"torch", "torchvision", "torchaudio"}
REGISTRY_OS = ("Microsoft", "POSIX", "MacOS", "OS Independent")
REGISTRY_ACCELERATORS = {"GPU :: NVIDIA CUDA", "GPU :: AMD ROCm", "GPU :: Intel Arc", "NPU :: Huawei Ascend", "GPU :: Apple Metal"}
VERSION_PART = re.compile(r"^(?:(==|>=|<=|!=|~=|>|<|<>|=)\s*)?(\d+\.\d+\.\d+(?:-[a-zA-Z0-9]+)?)?$")


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as data:
        return tomllib.load(data)


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].strip().lower()


def test_dependencies_never_replace_the_hosts_torch_and_follow_requirements_txt():
    dependencies = _pyproject()["project"]["dependencies"]
    assert not HOST_PACKAGES & {_name(d) for d in dependencies}
    lines = [line.split("#")[0].strip() for line in open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8")]
    requirements = [line for line in lines if line and _name(line) not in HOST_PACKAGES]
    assert sorted(dependencies) == sorted(requirements), "pyproject's dependencies differ from requirements.txt's (torch aside)"


def test_registry_fields():
    data = _pyproject()
    project, comfy = data["project"], data["tool"]["comfy"]
    name = project["name"]
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*(?:[-_.][A-Za-z0-9]+)*", name)
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["urls"]["Repository"].startswith("https://")
    systems = [c.removeprefix("Operating System :: ") for c in project["classifiers"] if c.startswith("Operating System :: ")]
    accelerators = [c.removeprefix("Environment :: ") for c in project["classifiers"] if c.startswith("Environment ::")]
    assert systems and all(s.startswith(REGISTRY_OS) for s in systems)
    assert accelerators and set(accelerators) <= REGISTRY_ACCELERATORS
    assert all(VERSION_PART.match(part.strip()) for part in comfy["requires-comfyui"].split(","))
    assert comfy["PublisherId"] and comfy["DisplayName"]


def test_descriptions_tell_what_the_pack_is_today():
    docstring = ast.get_docstring(ast.parse(open(os.path.join(ROOT, "__init__.py"), encoding="utf-8").read()))
    for text in (docstring, _pyproject()["project"]["description"]):
        assert all(method in text for method in METHODS) and "to come" not in text
