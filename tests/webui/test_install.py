"""install.py: installs only what is missing, never touches what the host pinned, never installs torch."""
from __future__ import annotations

import importlib.util
import sys
import types

from conftest import ROOT


def _load_installer():
    spec = importlib.util.spec_from_file_location("deblur_install_under_test", f"{ROOT}/install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_requirements_accept_the_forge_pins():
    from packaging.requirements import Requirement

    installer = _load_installer()
    specs = {name.lower(): Requirement(spec).specifier for name, spec in installer.read_requirements()}
    forge = {"diffusers": "0.31.0", "safetensors": "0.4.2", "pillow": "9.5.0", "numpy": "1.26.2", "tqdm": "4.66.1", "torch": "2.3.1"}
    for name, version in forge.items():
        assert specs[name].contains(version), f"requirements.txt refuses Forge's {name}=={version}"
    assert not {"einops", "kornia", "torchvision", "torchaudio"} & set(specs)


def test_only_missing_packages_are_installed_through_the_webuis_pip(tmp_path, monkeypatch, capsys):
    installer = _load_installer()
    (tmp_path / "requirements.txt").write_text("torch>=2.1\nnumpy>=99  # pinned lower by the host\n"
                                               "surely-not-installed-pkg>=1.0\n# a comment\n\npillow>=9.5\n")
    monkeypatch.setattr(installer, "REQUIREMENTS", str(tmp_path / "requirements.txt"))
    versions = {"torch": None, "numpy": "1.26.2", "surely-not-installed-pkg": None, "pillow": "9.5.0"}
    monkeypatch.setattr(installer, "installed_version", lambda name: versions[name])
    calls = []
    monkeypatch.setitem(sys.modules, "launch", types.SimpleNamespace(run_pip=lambda command, desc=None: calls.append(command)))
    installer.main()
    assert calls == ['install "surely-not-installed-pkg>=1.0"']  # not torch (the host's), not numpy (kept)
    assert "keeping numpy 1.26.2" in capsys.readouterr().out
