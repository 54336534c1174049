"""Tiers 1-2: resolving an entrypoint, and the messages of one that cannot be used (issue 18).

Modules are written into a ``tmp_path`` "working folder" (the search path) and a folder
that stands for the installed packages (on ``sys.path``, behind it); ``sys.path`` and
``sys.modules`` are put back after each test.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from colabrun.jobs.entrypoint import check_signature, resolve_entrypoint
from colabrun.jobs.errors import EntrypointError

MODULES = ("train_18", "fakepkg_18", "nonexistent_pkg_18")


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path]]:
    """(working folder, installed packages' folder); the test runs in the working folder."""
    work, site = tmp_path / "work", tmp_path / "site"
    work.mkdir()
    site.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    monkeypatch.chdir(work)
    yield work, site
    for name in MODULES:
        sys.modules.pop(name, None)


def _install_fakepkg(site: Path) -> None:
    (site / "fakepkg_18").mkdir()
    (site / "fakepkg_18" / "__init__.py").write_text("def thing():\n    return 1\n")


# -- signature ------------------------------------------------------------------------------


def test_a_function_without_an_argument_is_refused_naming_it_and_the_fix() -> None:
    def train() -> None: ...

    with pytest.raises(EntrypointError) as info:
        check_signature(train, entrypoint="train:train")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("entrypoint 'train:train' is `train()`, which cannot be called "
                              "with the run handle as its one argument")
    assert "define it as `def train(run):`" in message


@pytest.mark.parametrize("source", [
    "def train(run, config): ...",     # a second required argument
    "def train(*, run): ...",          # keyword-only
    "def train(**kwargs): ...",        # no positional slot
])
def test_other_signatures_that_cannot_take_one_argument_are_refused(source: str) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    with pytest.raises(EntrypointError, match=r"define it as `def train\(run\):`"):
        check_signature(namespace["train"], entrypoint="m:train")


@pytest.mark.parametrize("source", [
    "def train(run): ...", "def train(run, config=None): ...", "def train(*args): ...",
    "def train(run, /): ...", "class train:\n    def __init__(self, run): ...",
])
def test_signatures_that_take_the_handle_pass(source: str) -> None:
    namespace: dict[str, Any] = {}
    exec(source, namespace)
    check_signature(namespace["train"], entrypoint="m:train")


def test_a_partial_and_a_builtin_are_judged_by_what_python_can_tell() -> None:
    def train(run: Any, lr: float) -> None: ...

    check_signature(functools.partial(train, lr=0.1), entrypoint="m:train")
    check_signature(print, entrypoint="builtins:print")  # variadic: passes


def test_resolving_a_callable_checks_its_signature() -> None:
    def train() -> None: ...

    with pytest.raises(EntrypointError, match=r"test_entrypoint:.*train' is `train\(\)`"):
        resolve_entrypoint(train)


def test_resolving_a_module_entrypoint_checks_its_signature(
        folders: tuple[Path, Path]) -> None:
    work, _ = folders
    (work / "train_18.py").write_text("def train():\n    pass\n")
    with pytest.raises(EntrypointError, match="entrypoint 'train_18:train' is `train\\(\\)`"):
        resolve_entrypoint("train_18:train", search_path=[work])


# -- imports --------------------------------------------------------------------------------


def test_a_missing_dependency_is_named_with_the_command_that_installs_it(
        folders: tuple[Path, Path]) -> None:
    work, _ = folders
    (work / "train_18.py").write_text("import nonexistent_pkg_18\n\ndef train(run): ...\n")
    with pytest.raises(EntrypointError) as info:
        resolve_entrypoint("train_18:train", search_path=[work])
    message = str(info.value)
    assert message.startswith("entrypoint 'train_18:train': module 'train_18' does not import "
                              "(ModuleNotFoundError: No module named 'nonexistent_pkg_18'); ")
    assert f"no module 'nonexistent_pkg_18' in this Python ({sys.executable})" in message
    assert "`pip install nonexistent_pkg_18`" in message
    assert "check the spelling" not in message  # the module itself was found
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_a_misspelt_module_is_still_told_to_check_its_spelling(
        folders: tuple[Path, Path]) -> None:
    work, _ = folders
    with pytest.raises(EntrypointError, match=r"check the spelling, and that the module is "
                                              r"installed or in the current directory \(.*work\)"):
        resolve_entrypoint("train_18:train", search_path=[work])


@pytest.mark.parametrize("importing", [
    "from fakepkg_18 import thing",    # ImportError: cannot import name 'thing'
    "import fakepkg_18.sub",           # ModuleNotFoundError: 'fakepkg_18' is not a package
    "import fakepkg_18\nfakepkg_18.thing()",  # AttributeError: module has no attribute
])
def test_a_file_of_the_working_folder_that_shadows_a_package_is_named(
        folders: tuple[Path, Path], importing: str) -> None:
    work, site = folders
    _install_fakepkg(site)
    (work / "fakepkg_18.py").write_text("# my notes on fakepkg\n")
    (work / "train_18.py").write_text(f"{importing}\n\ndef train(run): ...\n")
    with pytest.raises(EntrypointError) as info:
        resolve_entrypoint("train_18:train", search_path=[work])
    message = str(info.value)
    assert "\n" not in message
    installed = (site / "fakepkg_18" / "__init__.py").resolve()
    assert (f"./fakepkg_18.py shadows the installed package 'fakepkg_18' ({installed}); "
            "rename it") in message


def test_a_module_that_raises_on_import_is_told_apart(folders: tuple[Path, Path]) -> None:
    work, _ = folders
    (work / "train_18.py").write_text("raise ValueError('no config')\n")
    with pytest.raises(EntrypointError, match=r"\(ValueError: no config\); the module raised "
                                              r"while it was imported: fix it"):
        resolve_entrypoint("train_18:train", search_path=[work])
