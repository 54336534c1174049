"""Imports point one way: runner -> state -> jobs (DESIGN.md), and exports stay small."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.helpers import REPO

FORBIDDEN = {"jobs": {"state", "runner"}, "state": {"runner"}, "runner": set()}


def imported_packages(path: Path) -> set[str]:
    """Top-level names a module imports (absolute imports only; we use no relative ones)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; use absolute ones"
            names.add((node.module or "").split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package: str) -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(imported_packages(path) & FORBIDDEN[package])
        for path in (REPO / package).rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_the_check_would_catch_an_upward_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("from runner.session import run_job\nimport state.model\n")
    assert imported_packages(module) >= {"runner", "state"}


@pytest.mark.parametrize("package", ["jobs", "state", "runner", "colabrun"])
def test_exports_are_sorted_and_importable(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert exported == sorted(exported)
    assert len(exported) <= 12, "keep the public surface small"
    for name in exported:
        assert getattr(module, name) is not None
