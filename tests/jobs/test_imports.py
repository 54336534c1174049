"""Tiers 1-2: why the user's code does not import (issue 18): the suspects an exception
names (pure), shadows and stand-in folders found on a real ``tmp_path``, nothing imported."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from colabrun.jobs.imports import (
    Shadow,
    find_shadows,
    import_hint,
    imported_here_hint,
    missing_hint,
    suspects,
    working_folders,
)

NAMES = ("fakepkg_18", "datasets_18", "helper_18")


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A working folder to run in, a folder of "installed" packages behind it on sys.path."""
    folder, site = tmp_path / "work", tmp_path / "site"
    folder.mkdir()
    (site / "fakepkg_18").mkdir(parents=True)
    (site / "fakepkg_18" / "__init__.py").write_text("")
    monkeypatch.setattr(sys, "path", [str(folder), *sys.path, str(site)])
    monkeypatch.chdir(folder)
    yield folder.resolve()
    for name in NAMES:
        sys.modules.pop(name, None)


def _raised(statement: str) -> BaseException:
    try:
        exec(statement, {})
    except Exception as exc:
        return exc
    raise AssertionError(f"{statement!r} did not raise")


# -- the suspects (pure) ------------------------------------------------------------------


def test_suspects_are_the_top_level_modules_named_along_the_chain() -> None:
    lazy = ModuleNotFoundError("No module named 'sklearn.datasets'", name="sklearn.datasets")
    try:
        raise RuntimeError("setup failed") from lazy
    except RuntimeError as wrapped:
        assert suspects(wrapped) == ["sklearn"]
    numpy = types.ModuleType("numpy")
    assert suspects(_raised_from(lambda: numpy.ndarray)) == ["numpy"]
    assert suspects(ImportError("cannot import name 'x' from 'yaml'", name="yaml")) == ["yaml"]
    assert suspects(ValueError("boom")) == []


def _raised_from(call: object) -> BaseException:
    try:
        call()  # type: ignore[operator]
    except Exception as exc:
        return exc
    raise AssertionError("did not raise")


def test_an_attribute_error_without_its_module_is_read_from_the_message() -> None:
    assert suspects(AttributeError("module 'numpy' has no attribute 'ndarray'")) == ["numpy"]


# -- shadows, stand-ins, missing modules (a real tmp_path) --------------------------------


def test_a_file_of_the_working_folder_shadows_the_installed_package(work: Path) -> None:
    (work / "fakepkg_18.py").write_text("")
    shadows = find_shadows(["fakepkg_18", "json"], folders=working_folders())
    assert len(shadows) == 1
    shadow = shadows[0]
    assert shadow.name == "fakepkg_18" and shadow.file == work / "fakepkg_18.py"
    assert shadow.installed.parts[-2:] == ("fakepkg_18", "__init__.py")
    assert str(shadow) == (f"./fakepkg_18.py shadows the installed package 'fakepkg_18' "
                           f"({shadow.installed}); rename it")


def test_a_loaded_shadow_is_found_from_its_module(work: Path) -> None:
    (work / "fakepkg_18").mkdir()
    (work / "fakepkg_18" / "__init__.py").write_text("")
    loaded = types.ModuleType("fakepkg_18")
    loaded.__file__ = str(work / "fakepkg_18" / "__init__.py")
    found = find_shadows(["fakepkg_18"], folders=[work], modules={"fakepkg_18": loaded})
    assert [s.file for s in found] == [work / "fakepkg_18"]
    assert str(found[0]).startswith("./fakepkg_18 shadows the installed package")


def test_the_users_own_module_with_no_installed_twin_is_no_shadow(work: Path) -> None:
    (work / "helper_18.py").write_text("")
    assert find_shadows(["helper_18"], folders=[work]) == []


def test_a_package_installed_but_found_first_is_no_shadow(work: Path) -> None:
    assert find_shadows(["fakepkg_18"], folders=[work]) == []


def test_the_hint_for_a_lazy_import_names_the_shadow(work: Path) -> None:
    (work / "fakepkg_18.py").write_text("")
    error = _raised("from fakepkg_18 import thing")
    assert import_hint(error, folders=working_folders()).startswith(
        "./fakepkg_18.py shadows the installed package 'fakepkg_18'")


def test_the_hint_for_a_missing_package_says_how_to_install_it(work: Path) -> None:
    error = _raised("import nonexistent_pkg_18")
    hint = import_hint(error, folders=working_folders())
    assert hint == (f"no module 'nonexistent_pkg_18' in this Python ({sys.executable}): "
                    "install it (`pip install nonexistent_pkg_18`, or `%pip install "
                    "nonexistent_pkg_18` in a notebook; its package may have another name), "
                    "or fix the import")


def test_the_hint_for_a_missing_submodule_of_an_installed_package(work: Path) -> None:
    hint = missing_hint("json.nonexistent_18", folders=[work])
    assert hint.startswith("'json' is installed (") and "has no module 'json.nonexistent_18'" \
        in hint


def test_a_data_folder_imported_in_place_of_a_missing_package_is_named(work: Path) -> None:
    (work / "datasets_18").mkdir()
    (work / "datasets_18" / "train.csv").write_text("x\n1\n")
    error = _raised("from datasets_18 import load_dataset")
    hint = import_hint(error, folders=working_folders())
    assert "no module 'datasets_18' in this Python" in hint
    assert "the folder ./datasets_18/ (no __init__.py) was imported in its place" in hint


def test_no_hint_for_an_error_that_names_no_module(work: Path) -> None:
    assert import_hint(ValueError("boom"), folders=[work]) == ""


def test_where_this_process_found_a_module_the_worker_did_not(work: Path) -> None:
    (work / "helper_18.py").write_text("")
    __import__("helper_18")
    hint = imported_here_hint("helper_18")
    assert hint.startswith(f"this process imported 'helper_18' from {work / 'helper_18.py'}, "
                           "but the worker (in ")
    assert f"`sys.path.insert(0, {str(work)!r})`" in hint
    assert imported_here_hint("not_imported_18") == "" and imported_here_hint("") == ""


def test_shadow_is_a_value() -> None:
    shadow = Shadow("yaml", Path("/elsewhere/yaml.py"), Path("/site/yaml/__init__.py"))
    assert str(shadow).startswith("/elsewhere/yaml.py shadows the installed package 'yaml'")
