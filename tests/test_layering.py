"""The house's layering, read from the source: shared parts never import a method."""
import ast
import os

from conftest import ROOT

METHODS = ("hidiff", "deblurdiff", "fidediff", "osdd")
SHARED = ("common", "sd21", "blur")


def imported_models_packages(source: str, package: list[str]) -> list[tuple[int, str]]:
    """(line, sub-package of ``models``) of every relative import in ``source``, a module of the package
    ``models/<package...>``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            if node.level - 1 > len(package):
                continue  # above models/: not a models package
            target = base + (node.module.split(".") if node.module else [])
            names = [target[0]] if target else [alias.name for alias in node.names]  # `from .. import x`
            found += [(node.lineno, name) for name in names]
    return found


def test_shared_parts_import_no_method():
    offenders = []
    for shared in SHARED:
        for directory, _, files in os.walk(os.path.join(ROOT, "models", shared)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(directory, name)
                    package = os.path.relpath(directory, os.path.join(ROOT, "models")).split(os.sep)
                    source = open(path, encoding="utf-8").read()
                    offenders += [f"{os.path.relpath(path, ROOT)}:{line} imports models/{target}"
                                  for line, target in imported_models_packages(source, package) if target in METHODS]
    assert not offenders, "shared parts know a method:\n" + "\n".join(offenders)


def test_the_scan_sees_a_method_import():
    """The scan itself: a shared module importing a method is caught, whichever form the import takes."""
    source = ("def f():\n    from ..deblurdiff.loader import read_deblurdiff\n    from .. import osdd\n"
              "    from .unet import build_unet\n    from ...fidediff import x\n")
    assert imported_models_packages(source, ["sd21"]) == [(2, "deblurdiff"), (3, "osdd"), (4, "sd21")]
    assert imported_models_packages(source, ["sd21", "training"])[-1] == (5, "fidediff")
