"""The house's layering, read from every import statement (those inside functions included).

Each package imports only the packages below it, and model/, the PyTorch core, none of the libraries
that orchestration, tracking, serving or data preparation need.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# package -> the project packages it may import (all of them lower in the house)
ALLOWED: dict[str, set[str]] = {
    "model": set(),
    "dataset": {"model"},
    "registry": {"model", "dataset"},
    "serving": {"model"},
    "components": {"model", "dataset", "registry", "serving"},
    "pipelines": {"model", "dataset", "registry", "serving", "components"},
    "omniretriever": {"model", "dataset", "registry", "serving", "components", "pipelines"},
}
NOT_IN_MODEL = {"great_expectations", "dvc", "dvc_data", "dvc_objects", "pandas", "mlflow", "kfp", "kserve",
                "tritonclient", "pytriton"}


def imported(package: str) -> dict[str, set[str]]:
    """file -> the top-level names its import statements name (relative imports resolved to the package)."""
    out: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                names.add(package if node.level else (node.module or "").split(".")[0])
        out[path.relative_to(ROOT).as_posix()] = names
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_the_packages_below_it(package):
    upward = {f: sorted(names & (set(ALLOWED) - ALLOWED[package] - {package})) for f, names in imported(package).items()}
    assert not {f: n for f, n in upward.items() if n}, f"{package} imports a package it may not"


def test_the_pytorch_core_imports_no_orchestration_tracking_serving_or_data_library():
    found = {f: sorted(names & NOT_IN_MODEL) for f, names in imported("model").items()}
    assert not {f: n for f, n in found.items() if n}
