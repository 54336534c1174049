"""Why the user's code does not import, in words: a package that is not installed, or a
file of the working folder that hides an installed package of the same name (a ``yaml.py``
beside the spec is imported instead of PyYAML).

colabrun imports the user's code in three places, and each failure gets the hint made here
(docs/troubleshooting.md, "Import errors"): the entrypoint's module
(:func:`~colabrun.jobs.entrypoint.resolve_entrypoint`), the training function's modules
when the worker loads its task, and an ``import`` the training function runs itself.

:func:`suspects` reads an exception (pure); :func:`find_shadows` and :func:`import_hint`
ask Python's path finder, never importing anything, and never raise.
"""

from __future__ import annotations

import importlib.machinery
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

#: how far along ``__cause__``/``__context__`` the suspects are looked for
CHAIN_LIMIT = 8
_NO_ATTRIBUTE = re.compile(r"^module '([\w.]+)' has no attribute")


@dataclass(frozen=True)
class Shadow:
    """A module of the working folder that hides an installed one of the same name.

    Args:
        name: the top-level module name, e.g. ``yaml``.
        file: the working folder's file (or package folder) Python imports.
        installed: the installed module's file, which Python does not reach.
    """

    name: str
    file: Path
    installed: Path

    def __str__(self) -> str:
        return (f"{shown(self.file)} shadows the installed package {self.name!r} "
                f"({self.installed}); rename it")


def shown(path: Path) -> str:
    """``path`` as the user reads it: ``./yaml.py`` in the current directory, else whole."""
    try:
        return f"./{path.relative_to(Path.cwd())}"
    except ValueError:
        return str(path)


def working_folders(search_path: Iterable[Path] = ()) -> tuple[Path, ...]:
    """The folders whose files a user's ``import`` finds before the installed packages.

    Args:
        search_path: the folders colabrun puts in front of ``sys.path`` (the current
            directory, usually).

    Returns:
        The current directory and ``search_path``, resolved, each once.
    """
    folders = [Path.cwd(), *search_path]
    return tuple(dict.fromkeys(_resolved(folder) for folder in folders))


def suspects(error: BaseException) -> list[str]:
    """The top-level modules an exception points at, along its chain. Pure.

    ``ModuleNotFoundError``/``ImportError`` name a module (``No module named
    'sklearn.datasets'``, ``cannot import name 'x' from 'yaml'``); an ``AttributeError``
    on a module (``module 'numpy' has no attribute 'ndarray'``) names it too: what a
    shadowing file usually causes.

    Args:
        error: what was raised.

    Returns:
        Top-level module names, first seen first, each once.
    """
    names: list[str] = []
    for exc in _chain(error):
        name: str | None = None
        if isinstance(exc, ImportError):
            name = exc.name
        elif isinstance(exc, AttributeError):
            obj = getattr(exc, "obj", None)
            found = _NO_ATTRIBUTE.match(str(exc))
            name = obj.__name__ if isinstance(obj, ModuleType) else (
                found.group(1) if found else None)
        if name:
            names.append(name.split(".")[0])
    return list(dict.fromkeys(names))


def find_shadows(names: Iterable[str], *, folders: Sequence[Path],
                 modules: Mapping[str, ModuleType] | None = None,
                 path: Sequence[str] | None = None) -> list[Shadow]:
    """Which of ``names`` Python takes from a working folder while an installed one exists.

    Args:
        names: top-level module names.
        folders: the working folders (:func:`working_folders`).
        modules: the loaded modules (``sys.modules``).
        path: the import path (``sys.path``).

    Returns:
        One :class:`Shadow` per shadowed name.
    """
    modules = sys.modules if modules is None else modules
    path = list(sys.path if path is None else path)
    homes = set(folders)
    elsewhere = [entry for entry in path if _resolved(Path(entry or os.curdir)) not in homes]
    shadows = []
    for name in names:
        taken = _taken_from(name, modules, path)
        if taken is None or _top_entry(taken).parent not in homes:
            continue
        installed = _origin(name, elsewhere)
        if installed is not None:
            shadows.append(Shadow(name, _top_entry(taken), installed))
    return shadows


def import_hint(error: BaseException, *, folders: Sequence[Path]) -> str:
    """What to do about ``error``, raised while importing or running the user's code.

    Args:
        error: the exception.
        folders: the working folders (:func:`working_folders`).

    Returns:
        One clause naming the cause and the fix (a shadowing file to rename, a package
        to install), or ``""`` when the exception says nothing of a module.
    """
    try:
        shadows = find_shadows(suspects(error), folders=folders)
        if shadows:
            return "; ".join(str(shadow) for shadow in shadows)
        for exc in _chain(error):
            if not isinstance(exc, ImportError) or not exc.name:
                continue
            if isinstance(exc, ModuleNotFoundError) or _stand_in(exc.name, folders):
                return missing_hint(exc.name, folders=folders)
    except Exception:  # a hint must never hide the error it explains
        pass
    return ""


def missing_hint(name: str, *, folders: Sequence[Path]) -> str:
    """What to do about ``No module named 'name'``, or about a package that imported as
    a bare folder of the working folder (a ``datasets/`` of data files, say).

    Args:
        name: the dotted module name Python did not find.
        folders: the working folders (:func:`working_folders`).

    Returns:
        One clause: install it, or check the name of a submodule.
    """
    top = name.split(".")[0]
    stand_in = _stand_in(top, folders)
    found = None if stand_in else _origin(top, list(sys.path))
    if found is not None and top != name:
        return (f"{top!r} is installed ({found}) but has no module {name!r}: check the name, "
                "or the installed version")
    instead = (f"; the folder {shown(stand_in)}/ (no __init__.py) was imported in its place"
               if stand_in else "")
    return (f"no module {top!r} in this Python ({sys.executable}){instead}: install it "
            f"(`pip install {top}`, or `%pip install {top}` in a notebook; its package may "
            "have another name), or fix the import")


def imported_here_hint(name: str) -> str:
    """What to do when another process (the worker) does not find a module this one
    imported: a notebook that imported it from a folder it left (``%cd``), say.

    Args:
        name: the dotted module name the other process did not find (``""``: none).

    Returns:
        One clause naming where this process found it and how to make it found, or ``""``
        when this process did not import it from a file.
    """
    top = name.split(".")[0]
    file = getattr(sys.modules.get(top), "__file__", None) if top else None
    if not isinstance(file, str):
        return ""
    entry = _top_entry(Path(file)).parent
    return (f"this process imported {top!r} from {file}, but the worker (in {Path.cwd()}) "
            f"does not find it: put its folder on sys.path (`sys.path.insert(0, "
            f"{str(entry)!r})`) before the run, or install it")


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    exc: BaseException | None = error
    while exc is not None and id(exc) not in seen and len(seen) < CHAIN_LIMIT:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _stand_in(name: str, folders: Sequence[Path]) -> Path | None:
    """The working folder's subfolder that top-level ``name`` was imported as: a namespace
    package, what Python makes of a folder without ``__init__.py`` when nothing is installed."""
    module = sys.modules.get(name.split(".")[0])
    if module is None or getattr(module, "__file__", None) is not None:
        return None
    for entry in getattr(module, "__path__", ()):
        folder = _resolved(Path(entry))
        if folder.parent in folders:
            return folder
    return None


def _taken_from(name: str, modules: Mapping[str, ModuleType], path: list[str]) -> Path | None:
    """Where ``import name`` comes from: the loaded module's file, else the finder's."""
    module = modules.get(name)
    file = getattr(module, "__file__", None) if module is not None else None
    if isinstance(file, str):
        return _resolved(Path(file))
    return _origin(name, path)


def _origin(name: str, path: list[str]) -> Path | None:
    """The file ``name`` is found at along ``path``, without importing it."""
    try:
        spec = importlib.machinery.PathFinder.find_spec(name, path)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None or not os.path.exists(spec.origin):
        return None
    return _resolved(Path(spec.origin))


def _top_entry(file: Path) -> Path:
    """The path entry's child that is the module: the package folder for its ``__init__``."""
    return file.parent if file.stem == "__init__" else file


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path.absolute()
