"""Imports point one way: runner -> state -> jobs (docs/contributing.md), all under one
``colabrun`` namespace, and exports stay small."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.helpers import REPO

LAYERS = ("jobs", "state", "runner")
FORBIDDEN = {"jobs": {"state", "runner"}, "state": {"runner"}, "runner": set()}


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a file imports (we use no relative imports)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; use absolute ones"
            names.add(node.module or "")
    return names


def colabrun_layers(modules: set[str]) -> set[str]:
    """The colabrun layers among imported modules: ``colabrun.state.lease`` -> ``state``."""
    return {m.split(".")[1] for m in modules if m.startswith("colabrun.") and m.count(".") >= 1}


def bare_layer_imports(modules: set[str]) -> set[str]:
    """Imports of a layer outside the namespace (``import runner``): they would load a
    user's ``runner.py`` instead, or a second copy of ours."""
    return {m for m in modules if m.split(".")[0] in LAYERS}


def python_files() -> list[Path]:
    """Every Python file of the repository, once (rglob does not descend colabrun/'s links)."""
    folders = [*LAYERS, "colabrun", "tests", "benchmarks"]
    return [path for folder in folders for path in (REPO / folder).rglob("*.py")]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(colabrun_layers(imported_modules(path))
                                            & FORBIDDEN[package])
        for path in (REPO / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_nothing_imports_a_layer_outside_the_colabrun_namespace() -> None:
    offenders = {str(p.relative_to(REPO)): sorted(bare_layer_imports(imported_modules(p)))
                 for p in python_files()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_checks_would_catch_an_upward_or_a_bare_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("from colabrun.runner.session import run_job\nimport colabrun.state.model\n"
                      "import jobs.spec\n")
    modules = imported_modules(module)
    assert colabrun_layers(modules) >= {"runner", "state"}
    assert bare_layer_imports(modules) == {"jobs.spec"}


def test_the_layers_are_links_inside_the_namespace() -> None:
    """The repository keeps the layers at its root; ``colabrun/`` links to them."""
    for layer in LAYERS:
        link = REPO / "colabrun" / layer
        assert link.is_symlink() and link.resolve() == (REPO / layer).resolve(), link


@pytest.mark.parametrize("package", ["colabrun.jobs", "colabrun.state", "colabrun.runner",
                                     "colabrun"])
def test_exports_are_sorted_and_importable(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert exported == sorted(exported)
    assert len(exported) <= 12, "keep the public surface small"
    for name in exported:
        assert getattr(module, name) is not None
